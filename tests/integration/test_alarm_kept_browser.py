"""A fault's reason stays until a person clears it: the simulator's thermal runaway on a real agent, seen
in real headless Chromium on the kiosk and on the fleet dashboard (fed by a real Mosquitto), in the
retained MQTT status, and again after the agent restarts. Screenshots go to tests/artifacts/alarms/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from afn_agent.agent import Agent
from afn_agent.config import BrokerConfig, load_config
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.broker import Broker, Client
from tests.helpers import api_table, wait_for, write_config

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "alarms"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOPIC = "afn/v1/fablab/printer-1/status"


def retained_status(broker: Broker) -> dict:
    """What a client that connects now is told (the broker's retained copy, not the agent's memory)."""
    probe = Client(broker, "fleet", client_id="probe-retained")
    try:
        probe.subscribe(TOPIC)
        raw = wait_for(lambda: probe.received("/status"), 5, "the retained status")
        return json.loads(raw[-1][1])
    finally:
        probe.close()


def test_thermal_runaway_reason_stays_on_screens_and_across_a_restart(tmp_path, start_sim):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/dev-setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    broker = Broker(tmp_path / "broker", open_access=True).start()
    sim = start_sim("marlin", speed=10, thermal_runaway_at=300)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine], broker={"host": "127.0.0.1", "port": broker.port})
    path.write_text(path.read_text() + api_table())
    agent = Agent(load_config(path)).start()
    fleet = Fleet(FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, None, {},
                              BrokerConfig(host="127.0.0.1", port=broker.port))).start()  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        job = circle_gcode(tmp_path / "vase.gcode", 2000, heat=None, centre=(110, 110))
        submit(agent.config, agent.ledger, "printer-1", job, "test", member_id="ana")
        assert agent.wait_idle("printer-1", 30)
        wait_for(lambda: agent.control.status("printer-1")["state"] == "fault", 5, "the fault state")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
            kiosk = browser.new_page(viewport={"width": 800, "height": 480}, locale="fr-FR")
            dashboard = browser.new_page(viewport={"width": 1200, "height": 700}, locale="en-GB")
            kiosk.goto(f"http://127.0.0.1:{agent.api.port}/kiosk/printer-1")
            dashboard.goto(f"http://127.0.0.1:{fleet.port}/")
            kiosk.wait_for_selector("#alarm-list li:has-text('Emballement thermique')")
            dashboard.wait_for_selector("#tile-printer-1 .alarm:has-text('Thermal runaway')")
            kiosk.screenshot(path=str(ARTIFACTS / "1-kiosk-fault-fr.png"))
            dashboard.screenshot(path=str(ARTIFACTS / "2-dashboard-fault.png"))
            status = retained_status(broker)
            assert status["state"] == "fault"
            (alarm,) = status["alarms"]
            assert alarm["code"] == "thermal-runaway" and "Thermal runaway" in alarm["text"]["en"]

            agent.stop()  # the agent restarts; the printer stays halted
            agent = Agent(load_config(path)).start()
            kiosk.goto(f"http://127.0.0.1:{agent.api.port}/kiosk/printer-1?lang=en")
            kiosk.wait_for_selector("#alarm-list li:has-text('Thermal runaway')")
            dashboard.reload()
            dashboard.wait_for_selector("#tile-printer-1 .alarm:has-text('Thermal runaway')")
            kiosk.screenshot(path=str(ARTIFACTS / "3-kiosk-after-restart.png"))
            dashboard.screenshot(path=str(ARTIFACTS / "4-dashboard-after-restart.png"))
            again = wait_for(lambda: (s := retained_status(broker))["alarms"] and s, 10, "the status republished")
            assert [a["id"] for a in again["alarms"]] == [alarm["id"]]
            assert again["alarms"][0]["at"] == alarm["at"], "its time is the fault's, not the restart's"

            kiosk.click("#clear-alarms")  # a person at the machine has dealt with it
            kiosk.wait_for_selector("#alarms", state="hidden")
            dashboard.wait_for_function(
                "document.querySelector('#tile-printer-1 .alarm').textContent.indexOf('Thermal') < 0"
            )
            kiosk.screenshot(path=str(ARTIFACTS / "5-kiosk-cleared.png"))
            browser.close()
        assert wait_for(lambda: retained_status(broker)["alarms"] == [], 10, "the cleared status")
        (row,) = agent.pump.alarm_book.history("printer-1")
        assert row["cleared_by"] == "kiosk" and row["kind"] == "fault"
    finally:
        agent.stop()
        fleet.stop()
        broker.stop()
