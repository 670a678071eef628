"""The manager's tiles in real headless Chromium, statuses published through a real Mosquitto by the
agents' own bus code: a tile per state shows that state in words and exactly the actions the status
offers (afn_agent/actions.py), the e-stop asks first, the table view sorts and filters, events read as
sentences with names for managers only, French and English, axe-core clean (screenshots in
tests/artifacts/fleet-view/)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from afn_agent.actions import offered
from afn_agent.bus.client import Bus
from afn_agent.config import BrokerConfig
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.ledger import Ledger
from tests.broker import Broker
from tests.browser import axe_problems, launch, need_browser, sign_in
from tests.helpers import wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "fleet-view"
SECRET = "fleet-command-secret-0123456789"
NOW = time.time()
ALARM = {"id": 7, "type": "fault", "code": "thermal-runaway", "t": NOW - 60, "at": "2026-12-04T10:00:00Z",
         "text": {"en": "Thermal runaway: a heater did not behave", "fr": "Emballement thermique : une chauffe"}}  # fmt: skip


def job(state: str = "running", member: str = "ana-0042", progress: float = 0.42) -> dict:
    return {"id": "j1", "name": "benchy.gcode", "state": state, "member_id": member, "started_at": None,
            "progress": progress, "eta_s": 1500}  # fmt: skip


SESSION = {"member_id": "ana-0042", "member_name": "Ana Lopez", "supervisor_id": None,
           "opened_at": "2026-12-04T10:00:00Z", "allowed_until": None}  # fmt: skip

# One machine per state a manager must tell apart at a glance: (machine, class, changes to an idle status)
STATES = {
    "idle": ("printer-1", "fdm-printer", {}),
    "printing": ("printer-2", "fdm-printer", {"state": "printing", "job": job(), "session": SESSION, "queued": 2}),
    "heating": ("printer-3", "fdm-printer", {"state": "printing", "job": job("heating", progress=0.0)}),
    "paused": ("mill-1", "cnc-mill", {"state": "paused", "job": job("paused")}),
    "waiting": ("printer-4", "fdm-printer", {"state": "waiting", "job": job("waiting"),
                "prompt": {"kind": "filament-change", "text": "Load red PLA", "tool": 0, "line": 900,
                           "host": True, "since": NOW}}),
    "fault": ("printer-5", "fdm-printer", {"state": "fault", "alarms": [ALARM]}),
    "locked": ("laser-1", "laser", {"locked": True, "lock_reason": "lens cleaning"}),
    "lock-pending": ("laser-2", "laser", {"state": "printing", "job": job(), "lock_pending": True,
                                          "lock_reason": "belt"}),
    "confirm": ("printer-6", "fdm-printer", {"needs_confirmation": "bed-clear"}),
    "disconnected": ("mill-2", "cnc-mill", {"state": "disconnected"}),
    "powered-off": ("laser-3", "laser", {"power": {"on": False, "watts": 0.0, "reachable": True}}),
}


def status(machine: str, cls: str, **changes) -> dict:
    s = {"machine": machine, "agent": "agent-a", "class": cls, "state": "idle", "locked": False,
         "lock_pending": False, "lock_reason": None, "needs_confirmation": None, "alarms": [], "session": None,
         "job": None, "queued": 0, "t": time.time(), **changes}  # fmt: skip
    s["actions"] = list(offered(s))
    return s


@pytest.fixture
def view_lab(tmp_path):
    need_browser(axe=True)
    from playwright.sync_api import sync_playwright

    broker = Broker(tmp_path / "broker", open_access=True).start()
    cfg = BrokerConfig(host="127.0.0.1", port=broker.port, keepalive_s=10)
    statuses = {m: status(m, cls, **changes) for m, cls, changes in STATES.values()}
    ledger = Ledger(tmp_path / "agent.sqlite3", "fablab")
    for m, s in statuses.items():
        ledger.upsert_machine(m, s["class"], "marlin2")
    commands: list[dict] = []
    bus = Bus(cfg, "fablab", "agent-a", ledger, list(statuses), lambda m: dict(statuses[m]),
              on_command=lambda cmd: (commands.append(cmd), ("done", "ok"))[1])  # fmt: skip
    bus.config = BrokerConfig(**{**cfg.__dict__, "command_secret": SECRET})
    bus.start()
    assert bus.connected.wait(10)
    fleet = Fleet(FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, SECRET,
                              {"max": hashlib.sha256(b"max-key").hexdigest()}, cfg)).start()  # fmt: skip
    wait_for(lambda: len(fleet.state.machines) == len(statuses), 10, "every retained status")
    bus.telemetry("printer-2", {"state": "printing", "temperatures": {"T0": [214.6, 215.0], "B": [59.8, 60.0]},
                                "position": {}, "grbl_state": "", "progress": 0.42, "window_bytes": 0,
                                "planner_free": None})  # fmt: skip
    wait_for(lambda: "printer-2" in fleet.state.temperatures, 10, "printer-2's telemetry")
    jpeg = tmp_path / "frame.jpg"  # a camera's thumbnail, as afn_agent/camera.py makes it (ffmpeg)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240",
                    "-frames:v", "1", "-y", str(jpeg)], check=True)  # fmt: skip
    bus.picture("printer-2", {"job_id": "j1", "moment": "start", "sha256": "ab" * 32, "t": time.time(),
                              "jpeg": base64.b64encode(jpeg.read_bytes()).decode()})  # fmt: skip
    wait_for(lambda: fleet.state.picture("printer-2") is not None, 10, "printer-2's picture")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        pages = {}
        for lang in ("en", "fr"):
            pages[lang] = browser.new_page(viewport={"width": 1400, "height": 1000})
            pages[lang].goto(f"http://127.0.0.1:{fleet.port}/?lang={lang}")
        yield statuses, bus, pages, commands, fleet
        browser.close()
    fleet.stop()
    bus.stop()
    broker.stop()


def signed_in(page, fleet, lang: str = "en") -> None:
    sign_in(page, fleet.port, lang=lang)
    page.wait_for_function(f"document.querySelectorAll('.tile').length === {len(STATES)}", timeout=15_000)


def test_each_state_in_words_with_only_its_actions_in_both_languages(view_lab):
    statuses, _bus, pages, _commands, fleet = view_lab
    problems = []
    for lang, page in pages.items():
        signed_in(page, fleet, lang)
        page.wait_for_selector("#tile-printer-2 .temps:has-text('°C')")
        page.wait_for_function("document.querySelector('#tile-printer-2 .picture').naturalWidth === 320")
        for name, (machine, _cls, _changes) in STATES.items():
            tile = page.locator(f"#tile-{machine}")
            shown = tile.locator(".actions button[data-command]").evaluate_all(
                "bs => bs.map(b => b.dataset.command).filter(c => c !== 'pairing-code')"
            )
            assert shown == statuses[machine]["actions"], (lang, name, shown)
        page.screenshot(path=str(ARTIFACTS / f"1-tiles-{lang}.png"), full_page=True)
        page.locator("#tile-printer-5").screenshot(path=str(ARTIFACTS / f"2-alarm-tile-{lang}.png"))
        page.locator("#tile-printer-4").screenshot(path=str(ARTIFACTS / f"3-waiting-tile-{lang}.png"))
        problems += [f"tiles ({lang}): {v}" for v in axe_problems(page)]
    en, fr = pages["en"], pages["fr"]
    # the state in words, as the kiosk says it, and the facts a manager needs
    assert en.inner_text("#tile-printer-2 .state") == "Printing" and fr.inner_text("#tile-printer-2 .state") == "Impression"
    assert en.inner_text("#tile-mill-1 .state") == "Paused"
    assert en.inner_text("#tile-printer-3 .state") == "Heating"
    assert en.inner_text("#tile-laser-3 .state") == "Powered off"
    assert "Thermal runaway" in en.inner_text("#tile-printer-5 .alarm")
    assert "Emballement thermique" in fr.inner_text("#tile-printer-5 .alarm")
    assert en.inner_text("#tile-printer-2 .who") == "In use by Ana Lopez"
    assert en.inner_text("#tile-printer-2 .queue") == "Waiting jobs: 2"
    assert en.inner_text("#tile-printer-2 .temps") == "nozzle 215 / 215 °C · bed 60 / 60 °C"
    assert fr.inner_text("#tile-printer-2 .temps") == "buse 215 / 215 °C · plateau 60 / 60 °C"
    assert "lens cleaning" in en.inner_text("#tile-laser-1")
    # the table view, sorted by progress (highest first), filtered by class
    for lang, page in pages.items():
        page.click("#view-table")
        page.click("th button[data-sort=progress]")
        page.wait_for_selector("th[aria-sort=ascending] button[data-sort=progress]")
        page.click("th button[data-sort=progress]")
        page.wait_for_selector("th[aria-sort=descending] button[data-sort=progress]")
        first = page.locator("#table tbody tr").first.locator("th").inner_text()
        most = max((s["job"] or {}).get("progress", -1) for s in statuses.values())
        assert statuses[first]["job"]["progress"] == most
        page.screenshot(path=str(ARTIFACTS / f"4-table-{lang}.png"), full_page=True)
        problems += [f"table ({lang}): {v}" for v in axe_problems(page)]
        page.select_option("#class-filter", "laser")
        page.wait_for_function("document.querySelectorAll('#table tbody tr').length === 3")
        page.select_option("#class-filter", "")
        page.click("#view-tiles")
    assert problems == []


def test_estop_asks_first_and_the_public_page_shows_no_member(view_lab):
    _statuses, _bus, pages, commands, fleet = view_lab
    page = pages["en"]
    # before signing in: no actions, no names, and the API gives no member id or name either
    page.wait_for_function(f"document.querySelectorAll('.tile').length === {len(STATES)}", timeout=15_000)
    page.wait_for_selector("#tile-printer-2 .who:has-text('In use')")
    assert page.inner_text("#tile-printer-2 .who") == "In use"
    assert page.locator("#tile-printer-2 .actions").is_hidden()
    assert page.locator("#tile-printer-2 .picture").is_hidden()  # a camera may show people: managers only
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{fleet.port}/api/machines/printer-2/picture.jpg")
    assert err.value.code == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.port}/api/fleet") as answer:
        public = answer.read().decode()
    assert "ana-0042" not in public and "Ana Lopez" not in public
    signed_in(page, fleet)
    page.click("#tile-printer-2 button[data-command=estop]")
    page.wait_for_selector("#estop-dialog[open]")
    assert "printer-2" in page.inner_text("#estop-question")
    page.screenshot(path=str(ARTIFACTS / "5-estop-confirm-en.png"))
    page.click("#estop-dialog button[value=no]")
    time.sleep(0.5)  # real time: a command sent by mistake would have reached the agent by now
    assert commands == []
    page.click("#tile-printer-2 button[data-command=estop]")
    page.click("#estop-dialog button[value=yes]")
    wait_for(lambda: len(commands) == 1, 5, "the signed e-stop")
    assert commands[0]["command"] == "estop" and commands[0]["machine"] == "printer-2"
    page.click("#tile-printer-1 button[data-command=lock]")
    page.fill("#lock-reason", "nozzle swap")
    page.click("#lock-dialog button[value=yes]")
    wait_for(lambda: len(commands) == 2, 5, "the signed lock")
    assert commands[1]["args"] == {"reason": "nozzle swap"}


def test_events_read_as_sentences_with_names_for_managers_only(view_lab):
    _statuses, bus, pages, _commands, fleet = view_lab
    refused = {"type": "badge", "machine": "mill-1", "code": "supervisor_required", "member_id": "ana-0042",
               "member_name": "Ana Lopez", "action": "badge-in", "t": time.time()}  # fmt: skip
    done = {"type": "job-completed", "machine": "printer-2", "job_id": "j1", "record_id": "r1",
            "outcome": "completed", "member_id": "ana-0042", "t": time.time()}  # fmt: skip
    en, fr = pages["en"], pages["fr"]
    signed_in(en, fleet)
    for event in (refused, done):
        bus.ledger.outbox_add("event", event["machine"], event)
    bus.wake()
    en.wait_for_selector("#events li:has-text('mill-1: Ana Lopez was refused — a trainer must badge in.')")
    en.wait_for_selector("#events li:has-text(\"printer-2: Ana Lopez's job completed.\")")
    fr.wait_for_selector("#events li:has-text('mill-1 : un membre a été refusé·e — un formateur doit badger.')")
    assert "Ana" not in fr.inner_text("#events")
    en.screenshot(path=str(ARTIFACTS / "6-events-en.png"), full_page=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.port}/api/fleet") as answer:
        public = json.loads(answer.read())
    assert all("facts" not in e and "Ana" not in json.dumps(e) for e in public["events"])
