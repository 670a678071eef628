"""The fleet's charts: where each machine's time went (from the state changes the dashboard saw on a real
Mosquitto), jobs and revenue per day (from the usage records), a printer's temperatures live; the page
in headless Chromium with the shipped uPlot, French and English, axe-core clean."""

from __future__ import annotations

import json
import time

import pytest

from afn_agent.fleet.history import BUCKETS, Filter
from tests.browser import axe_problems, launch, need_browser, sign_in
from tests.helpers import wait_for
from tests.integration.test_fleet_history import ARTIFACTS as SHOTS
from tests.integration.test_fleet_history import bill, lab  # noqa: F401 (the fixture)

DAY = 86400.0


def test_utilisation_jobs_per_day_and_live_temperatures(lab):  # noqa: F811 (fixture)
    statuses = {m: {"machine": m, "agent": "agent-a", "class": cls, "state": "idle", "locked": False,
                    "lock_pending": False, "alarms": [], "job": None, "session": None, "t": time.time()}
                for m, cls in (("printer-1", "fdm-printer"), ("laser-1", "laser"), ("mill-1", "cnc-mill"))}  # fmt: skip
    lab.bus.status = lambda m: dict(statuses[m])
    fleet = lab.start_fleet()
    history = fleet.history
    assert history is not None
    # a past day the dashboard saw: printer-1 idle, heating, printing, waiting for a person, idle again
    now = time.time()
    for offset, bucket in ((DAY - 60, "idle"), (20 * 3600, "heating"), (19.5 * 3600, "busy"), (12 * 3600, "waiting"),
                           (11 * 3600, "busy"), (6 * 3600, "idle")):  # fmt: skip
        history.state("fablab", "printer-1", "fdm-printer", bucket, now - offset)
    history.state("fablab", "laser-1", "laser", "down", now - 10 * 3600)
    # and the live path: statuses through the agent's bus and the broker
    lab.bus.start()
    wait_for(lambda: len(fleet.state.machines) == 3, 10, "three statuses")
    statuses["mill-1"] = {**statuses["mill-1"], "state": "printing",
                          "job": {"id": "j", "name": "pocket.nc", "state": "running", "member_id": "m-1",
                                  "started_at": None, "progress": 0.1, "eta_s": 60}}  # fmt: skip
    lab.bus.status_changed("mill-1")
    for n in range(12):
        bill(lab.ledger, n)
    lab.bus.telemetry("printer-1", {"state": "idle", "temperatures": {"T0": [24.0, 0.0], "B": [22.0, 0.0]},
                                    "position": {}, "grbl_state": "", "progress": 0.0, "window_bytes": 0,
                                    "planner_free": None})  # fmt: skip
    wait_for(lambda: history.count(Filter()) == 12, 15, "the records")
    wait_for(lambda: "printer-1" in fleet.state.temperatures, 10, "printer-1's temperatures")
    opener = lab.http()
    day = json.loads(lab.get(opener, "/api/charts/utilisation?period=day"))
    p1 = day["machines"]["fablab:printer-1"]
    assert sum(p1[b] for b in (*BUCKETS, "unknown")) == pytest.approx(day["to"] - day["from"], abs=1)
    assert p1["heating"] == pytest.approx(0.5 * 3600, abs=2) and p1["waiting"] == pytest.approx(3600, abs=2)
    assert p1["busy"] == pytest.approx(7.5 * 3600 + 5 * 3600, abs=2)
    wait_for(lambda: json.loads(lab.get(opener, "/api/charts/utilisation?period=day"))["machines"]
             .get("fablab:mill-1", {}).get("busy", 0) > 0, 10, "mill-1's busy time from its live status")  # fmt: skip
    assert day["classes"]["laser"]["down"] == pytest.approx(10 * 3600, abs=2)
    per_day = json.loads(lab.get(opener, "/api/charts/days?days=30"))["days"]
    assert sum(d["jobs"] for d in per_day) == 12
    with pytest.raises(Exception, match="422"):
        lab.get(opener, "/api/charts/utilisation?period=year")
    need_browser(axe=True)
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        browser = launch(p)
        for lang in ("en", "fr"):
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            sign_in(page, fleet.port, lang=lang)
            page.goto(f"http://127.0.0.1:{fleet.port}/charts?lang={lang}")
            page.wait_for_selector("#by-machine .stack-row")
            page.wait_for_selector("#days-chart canvas")
            page.wait_for_selector("#temps-chart canvas")
            label = page.get_attribute("#by-class .stack-row:first-child .stack", "aria-label")
            assert label and "%" in label
            page.screenshot(path=str(SHOTS / f"8-charts-{lang}.png"), full_page=True)
            problems += [f"charts ({lang}): {v}" for v in axe_problems(page)]
        browser.close()
    assert problems == []
