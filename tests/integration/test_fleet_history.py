"""The fleet's job history: usage records billed in a real agent ledger go out through the agent's bus
and a real Mosquitto to the dashboard, which keeps them by id. Its CSV for a period is byte for byte what
`afn-agent ledger export` writes for that period; pages by key cover every record once; records
published while the dashboard was down arrive when it is back (its lasting session); the page in
headless Chromium, French and English, axe-core clean, a row opening its job's events."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from afn_agent.bus.client import Bus
from afn_agent.config import BrokerConfig
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.ledger import Ledger
from afn_agent.ledger.export import export, parse_day
from tests.broker import Broker, Client
from tests.browser import axe_problems, launch, need_browser, sign_in
from tests.helpers import wait_for
from tests.unit.test_ledger import FIGURES, TARIFF

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "fleet-view"
MACHINES = ("printer-1", "laser-1", "mill-1")
OUTCOMES = ("completed", "completed", "cancelled", "failed")


def bill(ledger: Ledger, n: int) -> dict:
    """A job run and billed in the ledger, as the pump does it: queued, started, finished."""
    machine = MACHINES[n % 3]
    job = ledger.add_job(machine, f"/spool/{n}.gcode", f"part-{n}.gcode", "ab" * 32, 1234, "test",
                         {"time_s": 700.0}, member_id=f"m-{n % 4}")  # fmt: skip
    ledger.transition(job, "starting", "t")
    outcome = OUTCOMES[n % 4]
    stop = {"completed": "normal", "cancelled": "member", "failed": "fault"}[outcome]
    reason = "thermal runaway" if outcome == "failed" else ""
    record = ledger.finish(job, outcome, stop, reason, FIGURES, TARIFF, "fdm-printer")
    ledger.outbox_add("event", machine, {"type": f"job-{outcome}", "machine": machine, "t": time.time(),
                                         "job_id": job, "record_id": record["record_id"], "outcome": outcome,
                                         "member_id": record["member_id"], "reason": reason})  # fmt: skip
    return record


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.broker = Broker(tmp_path / "broker", open_access=True).start()
        self.cfg = BrokerConfig(host="127.0.0.1", port=self.broker.port, keepalive_s=10)
        self.ledger = Ledger(tmp_path / "agent.sqlite3", "fablab")
        for m in MACHINES:
            self.ledger.upsert_machine(m, "fdm-printer", "marlin2")
        self.bus = Bus(self.cfg, "fablab", "agent-a", self.ledger, list(MACHINES), lambda m: {"machine": m})
        self.fleet: Fleet | None = None

    def start_fleet(self) -> Fleet:
        config = FleetConfig(self.tmp / "fleet.toml", "fablab", "127.0.0.1", 0, None,
                             {"max": hashlib.sha256(b"max-key").hexdigest()}, self.cfg, self.tmp / "fleet")  # fmt: skip
        self.fleet = Fleet(config).start()
        assert self.fleet.connected.wait(10)
        return self.fleet

    def http(self) -> urllib.request.OpenerDirector:
        """A manager's session on the dashboard (signed in, cookie kept)."""
        assert self.fleet is not None
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        login = urllib.request.Request(f"http://127.0.0.1:{self.fleet.port}/api/login",
                                       data=b'{"name": "max", "key": "max-key"}',
                                       headers={"Content-Type": "application/json"})  # fmt: skip
        opener.open(login).read()
        return opener

    def get(self, opener: urllib.request.OpenerDirector, path: str) -> bytes:
        assert self.fleet is not None
        with opener.open(f"http://127.0.0.1:{self.fleet.port}{path}") as answer:
            return answer.read()

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        self.bus.stop()
        self.broker.stop()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.stop()


def test_history_csv_equals_ledger_export_pages_cover_all_and_downtime_loses_nothing(lab):
    fleet = lab.start_fleet()
    records = [bill(lab.ledger, n) for n in range(24)]
    lab.bus.start()
    assert fleet.history is not None
    wait_for(lambda: fleet.history.count(fleet_filter()) == 24, 15, "24 records at the dashboard")
    opener = lab.http()
    # the same period, both ways: the dashboard's CSV and the agent's `ledger export`
    since, until = "2000-01-01", records[15]["end"]
    ours = lab.get(opener, f"/api/history.csv?since={since}&until={urllib.parse.quote(until)}").decode()
    theirs = export(lab.ledger, parse_day(since, "--since"), parse_day(until, "--until"), "csv")
    assert ours == theirs and len(ours.splitlines()) == 16
    # pages of 5, newest first, every record once
    seen, after = [], ""
    while True:
        page = json.loads(lab.get(opener, f"/api/history?limit=5{after}"))
        assert page["total"] == 24
        seen += [r["record_id"] for r in page["records"]]
        if not page["next"]:
            break
        after = f"&after_end={urllib.parse.quote(page['next'][0])}&after_id={page['next'][1]}"
    assert seen == [r["record_id"] for r in sorted(records, key=lambda r: (r["end"], r["record_id"]), reverse=True)]
    failed = json.loads(lab.get(opener, "/api/history?outcome=failed&member=m-3"))
    assert failed["total"] == 6 and {r["job"]["outcome"] for r in failed["records"]} == {"failed"}
    one = json.loads(lab.get(opener, f"/api/history/{records[3]['record_id']}"))
    assert one["record"] == records[3]
    assert any("failed" in e["words"]["en"] for e in one["events"]), one["events"]
    # hostile or wrong filters are named, and nobody but a manager reads the history
    for query, named in (("outcome=maybe", "outcome"), ("since=yesterday", "since"), ("member=" + "x" * 90, "member")):
        with pytest.raises(urllib.error.HTTPError) as err:
            lab.get(opener, f"/api/history?{query}")
        assert err.value.code == 422 and named in err.value.read().decode()
    for picture, code in (("7", 404), (str(2**63), 422), ("-1", 422)):  # 2**63: past SQLite's integers
        with pytest.raises(urllib.error.HTTPError) as err:
            lab.get(opener, f"/api/history/pictures/{picture}.jpg")
        assert err.value.code == code, picture
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{fleet.port}/api/history")
    assert err.value.code == 401
    # the dashboard stops; jobs are billed meanwhile; its lasting session brings them when it is back
    fleet.stop()
    watcher = Client(lab.broker, "watcher")
    watcher.subscribe("afn/v1/fablab/+/usage")
    late = [bill(lab.ledger, n) for n in range(24, 30)]
    lab.bus.wake()
    wait_for(lambda: len(watcher.received("/usage")) >= 6, 15, "the late records on the broker")
    watcher.close()
    for record in late:  # the booking system has them: the agent sends them no more
        assert lab.ledger.acknowledge(record["record_id"])
    fleet = lab.start_fleet()
    assert fleet.history is not None
    wait_for(lambda: fleet.history.count(fleet_filter()) == 30, 15, "the records sent while it was down")
    kept = {r["record_id"] for r in fleet.history.page(fleet_filter(), None, 100)["records"]}
    assert {r["record_id"] for r in late} <= kept


def fleet_filter():
    from afn_agent.fleet.history import Filter

    return Filter()


def test_history_page_in_both_languages(lab):
    need_browser(axe=True)
    from playwright.sync_api import sync_playwright

    fleet = lab.start_fleet()
    for n in range(60):
        bill(lab.ledger, n)
    lab.bus.start()
    assert fleet.history is not None
    wait_for(lambda: fleet.history.count(fleet_filter()) == 60, 15, "60 records at the dashboard")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as p:
        browser = launch(p)
        for lang in ("en", "fr"):
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"http://127.0.0.1:{fleet.port}/history?lang={lang}")
            page.wait_for_selector("#message:not(.hidden)")  # not signed in: told where to sign in
            sign_in(page, fleet.port, lang=lang)
            page.goto(f"http://127.0.0.1:{fleet.port}/history?lang={lang}")
            page.wait_for_function("document.querySelectorAll('#records tbody tr').length === 50")
            page.click("#next")
            page.wait_for_function("document.querySelectorAll('#records tbody tr').length === 10")
            page.click("#previous")
            page.wait_for_function("document.querySelectorAll('#records tbody tr').length === 50")
            page.select_option("select[name=outcome]", "failed")
            page.click("#filter button")
            page.wait_for_function("document.querySelectorAll('#records tbody tr').length === 15")
            page.click("#records tbody tr:first-child button.linkish")
            page.wait_for_selector("#details:not(.hidden) #details-events li")
            page.screenshot(path=str(ARTIFACTS / f"7-history-{lang}.png"), full_page=True)
            problems += [f"history ({lang}): {v}" for v in axe_problems(page)]
            assert ("Failed" if lang == "en" else "Échoué") in page.inner_text("#records tbody")
        browser.close()
    assert problems == []
