"""One dashboard over two labs (two sites on one real Mosquitto, the same machine id in both): machines
are told apart by their lab, a manager of one lab steers and sees names only there (commands to the
other lab refused before they are signed), the history and charts keep to the manager's labs, and the
page filters by lab (headless Chromium)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from afn_agent.actions import offered
from afn_agent.bus.client import Bus
from afn_agent.config import BrokerConfig
from afn_agent.fleet.history import Filter
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.ledger import Ledger
from tests.broker import Broker
from tests.browser import launch, need_browser, sign_in
from tests.helpers import wait_for
from tests.unit.test_ledger import FIGURES, TARIFF

SECRET = "fleet-command-secret-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "fleet-view"
LABS = {"fablab": ("printer-1", "laser-1"), "makerspace": ("printer-1", "mill-1")}
SESSION = {"member_id": "ana-0042", "member_name": "Ana Lopez", "supervisor_id": None,
           "opened_at": "2026-12-04T10:00:00Z", "allowed_until": None}  # fmt: skip


def status(machine: str, agent: str) -> dict:
    s = {"machine": machine, "agent": agent, "class": "fdm-printer", "state": "printing", "locked": False,
         "lock_pending": False, "lock_reason": None, "needs_confirmation": None, "alarms": [],
         "session": SESSION, "queued": 0, "t": time.time(),
         "job": {"id": f"{agent}-j", "name": "part.gcode", "state": "running", "member_id": "ana-0042",
                 "started_at": None, "progress": 0.5, "eta_s": 60}}  # fmt: skip
    s["actions"] = list(offered(s))
    return s


@pytest.fixture
def two_labs(tmp_path):
    broker = Broker(tmp_path / "broker", open_access=True).start()
    cfg = BrokerConfig(host="127.0.0.1", port=broker.port, keepalive_s=10, command_secret=SECRET)
    buses, commands = {}, {site: [] for site in LABS}
    for site, machines in LABS.items():
        ledger = Ledger(tmp_path / f"{site}.sqlite3", site)
        for m in machines:
            ledger.upsert_machine(m, "fdm-printer", "marlin2")
        statuses = {m: status(m, f"pi-{site}") for m in machines}
        bus = Bus(cfg, site, f"pi-{site}", ledger, list(machines), lambda m, s=statuses: dict(s[m]),
                  on_command=lambda cmd, got=commands[site]: (got.append(cmd), ("done", "ok"))[1])  # fmt: skip
        buses[site] = bus.start()
        assert bus.connected.wait(10)
    key = hashlib.sha256
    fleet = Fleet(FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, SECRET,
                              {"max": key(b"max-key").hexdigest(), "zoe": key(b"zoe-key").hexdigest()},
                              BrokerConfig(host="127.0.0.1", port=broker.port, keepalive_s=10), tmp_path / "fleet",
                              labs=("makerspace",), manager_labs={"zoe": ("makerspace",)})).start()  # fmt: skip
    wait_for(lambda: len(fleet.state.machines) == 4, 10, "both labs' machines")
    yield fleet, buses, commands
    fleet.stop()
    for bus in buses.values():
        bus.stop()
    broker.stop()


def session(fleet, name: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    body = json.dumps({"name": name, "key": f"{name}-key"}).encode()
    opener.open(urllib.request.Request(f"http://127.0.0.1:{fleet.port}/api/login", data=body,
                                       headers={"Content-Type": "application/json"})).read()  # fmt: skip
    return opener


def call(opener, fleet, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{fleet.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with opener.open(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_manager_steers_and_sees_names_in_their_own_lab_only(two_labs):
    fleet, _buses, commands = two_labs
    assert set(fleet.state.machines) == {"printer-1", "laser-1", "makerspace:printer-1", "makerspace:mill-1"}
    zoe, maxi = session(fleet, "zoe"), session(fleet, "max")
    code, answer = call(zoe, fleet, "/api/machines/printer-1/command", {"command": "pause"})
    assert code == 403 and answer["detail"] == "zoe does not manage fablab"
    code, _ = call(zoe, fleet, "/api/machines/makerspace:printer-1/command", {"command": "pause"})
    assert code == 200
    wait_for(lambda: len(commands["makerspace"]) == 1, 5, "the signed pause at the makerspace's agent")
    assert commands["makerspace"][0]["machine"] == "printer-1" and commands["makerspace"][0]["actor"] == "zoe"
    code, _ = call(maxi, fleet, "/api/machines/printer-1/command", {"command": "pause"})
    assert code == 200
    wait_for(lambda: len(commands["fablab"]) == 1, 5, "the signed pause at the fablab's agent")
    time.sleep(0.3)  # real time: a command sent to the wrong lab would have arrived by now
    assert len(commands["makerspace"]) == 1
    _, seen = call(zoe, fleet, "/api/fleet")
    ours, theirs = seen["machines"]["makerspace:printer-1"], seen["machines"]["printer-1"]
    assert ours["session"]["member_name"] == "Ana Lopez" and ours["yours"] and ours["lab"] == "makerspace"
    assert theirs["session"] == {"in_use": True} and not theirs["yours"] and theirs["lab"] == "fablab"
    assert seen["labs"] == ["fablab", "makerspace"]


def test_history_keeps_to_the_managers_labs(two_labs):
    fleet, buses, _ = two_labs
    for bus in buses.values():
        ledger = bus.ledger
        job = ledger.add_job("printer-1", "/s/a.gcode", "a.gcode", "ab" * 32, 1, "t", {}, member_id="m-1")
        ledger.transition(job, "starting", "t")
        ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
        bus.wake()
    assert fleet.history is not None
    wait_for(lambda: fleet.history.count(Filter()) == 2, 15, "both labs' records")
    zoe, maxi = session(fleet, "zoe"), session(fleet, "max")
    assert call(zoe, fleet, "/api/history")[1]["total"] == 1
    assert call(maxi, fleet, "/api/history")[1]["total"] == 2
    assert call(zoe, fleet, "/api/history?lab=fablab")[0] == 403
    assert call(maxi, fleet, "/api/history?lab=makerspace")[1]["records"][0]["machine"]["id"] == "printer-1"
    theirs = call(maxi, fleet, "/api/history?lab=fablab")[1]["records"][0]["record_id"]
    assert call(maxi, fleet, f"/api/history/{theirs}")[0] == 200
    assert call(zoe, fleet, f"/api/history/{theirs}")[0] == 404  # another lab's record, even by its id
    labs = call(zoe, fleet, "/api/charts/utilisation?period=day")[1]["labs"]
    assert set(labs) == {"makerspace"}


def test_the_page_filters_by_lab(two_labs):
    need_browser()
    from playwright.sync_api import sync_playwright

    fleet, _, _ = two_labs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        sign_in(page, fleet.port, "zoe", "zoe-key")
        page.wait_for_function("document.querySelectorAll('.tile').length === 4")
        mine = page.locator(".tile[data-lab=makerspace] .actions:not(.hidden)").count()
        theirs = page.locator(".tile[data-lab=fablab] .actions:not(.hidden)").count()
        assert (mine, theirs) == (2, 0)
        page.select_option("#lab-filter", "makerspace")
        page.wait_for_function("document.querySelectorAll('.tile:not(.hidden)').length === 2")
        page.screenshot(path=str(ARTIFACTS / "9-two-labs-zoe-en.png"), full_page=True)
        browser.close()
