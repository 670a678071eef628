"""The agent against simulated machines: every job ends in one priced usage record, whatever ends it."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.analyzer import analyze_path
from afn_agent.intake import submit
from afn_agent.ledger.usage import SCHEMA_FILE, reprice
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import under_way, wait_for


@pytest.fixture
def printer_agent(one_machine):
    """printer_agent(**sim_options) -> agent: one simulated Marlin printer behind a started agent."""
    return lambda **sim_options: one_machine("printer-1", extra_machine={"material": "PLA"}, **sim_options)[0]


def job_file(tmp_path, segments=1500, heat=(200.0, 60.0)):
    return circle_gcode(tmp_path / f"job-{segments}.gcode", segments, heat=heat, centre=(110, 110))


def records(agent):
    return [r for _, r in agent.ledger.usage_after(0, 1000)]


def test_completed_job_is_billed_from_acknowledged_lines(printer_agent, tmp_path):
    agent = printer_agent()
    path = job_file(tmp_path)
    job_id, quote = submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
    assert agent.wait_idle("printer-1", 60)
    (rec,) = records(agent)
    a = analyze_path(path, load_profile("marlin2"))
    assert rec["job"]["outcome"] == "completed" and rec["job"]["stop_type"] == "normal"
    assert rec["member_id"] == "m-1" and rec["job"]["id"] == job_id
    assert rec["material_total"]["mm"] == pytest.approx(a.material_mm, rel=1e-6)
    assert rec["material"][0]["kind"] == "PLA"
    t = rec["time_s"]
    assert t["heating_s"] > 1.0, "the M190/M109 waits are heating time"
    assert t["active_s"] > 1.0
    assert t["total_s"] == pytest.approx(
        sum(t[k] for k in ("active_s", "heating_s", "paused_s", "idle_s")), abs=0.01
    )
    assert rec["job"]["done_fraction"] == 1.0
    assert rec["price"] == reprice(rec)
    jsonschema.validate(rec, json.loads(SCHEMA_FILE.read_text()))
    states = [x["to_state"] for x in agent.ledger.transitions(job_id)]
    assert states[:3] == ["queued", "starting", "running"] and states[-1] == "completed"
    assert "heating" in states, "the heat waits are their own state"
    assert "running" in states
    assert quote["quote"]["currency"] == "EUR"


def test_paused_time_is_its_own_bucket(printer_agent, tmp_path):
    agent = printer_agent()
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 4000, heat=None), "test", member_id="m-1"
    )
    machine = agent.machines["printer-1"]
    under_way(machine, 50)
    machine.pause()
    time.sleep(2.0)  # real time: the paused time this test measures
    machine.resume()
    assert agent.wait_idle("printer-1", 60)
    (rec,) = records(agent)
    assert rec["job"]["outcome"] == "completed"
    assert 1.5 < rec["time_s"]["paused_s"] < 3.5
    assert rec["billing"]["quantities"]["paused_min"] != "0.0000"


def test_member_cancel_is_billed_for_the_part_done(printer_agent, tmp_path):
    agent = printer_agent()
    path = job_file(tmp_path, 6000, heat=None)
    submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-2")
    deadline = time.monotonic() + 10
    while agent.machines["printer-1"].snapshot()["progress"] < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.control.cancel("printer-1", "member")
    assert agent.wait_idle("printer-1", 30)
    (rec,) = records(agent)
    assert rec["job"]["outcome"] == "cancelled" and rec["job"]["stop_type"] == "cancelled"
    assert rec["billing"]["basis"] == "done_part"
    full = analyze_path(path, load_profile("marlin2")).material_mm
    assert 0.15 * full < rec["material_total"]["mm"] < 0.9 * full
    assert 0.15 < rec["job"]["done_fraction"] < 0.9


def test_machine_fault_is_not_charged_by_policy(printer_agent, tmp_path):
    agent = printer_agent(thermal_runaway_at=400)
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 2000, heat=None), "test", member_id="m-3"
    )
    assert agent.wait_idle("printer-1", 30)
    (rec,) = records(agent)
    assert rec["job"]["outcome"] == "failed" and rec["job"]["stop_type"] == "fault"
    assert rec["billing"]["basis"] == "none" and rec["price"] == "0.00"
    assert "runaway" in rec["job"]["reason"].lower()
    events = [json.loads(r["payload"]) for r in agent.ledger.outbox_due(limit=1000) if r["kind"] == "event"]
    assert any(e["type"] == "fault" for e in events)


def test_a_fault_keeps_its_reason_in_the_status(printer_agent, tmp_path):
    """The job's end must not clear the fault that ended it: the retained status says why."""
    agent = printer_agent(thermal_runaway_at=400)
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 2000, heat=None), "test", member_id="m-3"
    )
    assert agent.wait_idle("printer-1", 30)
    status = wait_for(lambda: (s := agent.control.status("printer-1"))["state"] == "fault" and s, 5, "the fault state")
    assert [a["type"] for a in status["alarms"]] == ["fault"], status["alarms"]
    alarm = status["alarms"][0]
    assert "runaway" in alarm["reason"].lower() and alarm["code"] == "thermal-runaway"
    assert alarm["text"]["en"].startswith("Thermal runaway") and alarm["text"]["fr"].startswith("Emballement")
    assert abs(alarm["t"] - time.time()) < 60 and alarm["at"].endswith("Z")


def test_an_alarm_outlives_a_restart_until_a_person_clears_it(printer_agent, tmp_path):
    from afn_agent.agent import Agent
    from afn_agent.config import load_config

    agent = printer_agent(thermal_runaway_at=400)
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 2000, heat=None), "test", member_id="m-3"
    )
    assert agent.wait_idle("printer-1", 30)
    wait_for(lambda: agent.control.status("printer-1")["alarms"], 5, "the fault's alarm")
    before = agent.control.status("printer-1")["alarms"]
    agent.stop()
    again = Agent(load_config(agent.config.path), {"printer-1": agent.machines["printer-1"]})
    try:
        after = again.control.status("printer-1")["alarms"]
        assert after == before, "the ledger holds the alarm across the restart"
        assert again.control.clear_alarms("printer-1", "ana") == 1
        assert again.control.status("printer-1")["alarms"] == []
        (row,) = again.pump.alarm_book.history("printer-1")
        assert row["cleared_by"] == "ana" and row["cleared_at"]
        (audit,) = [a for a in again.ledger.audit_log("printer-1") if a["action"] == "clear-alarms"]
        assert audit["actor"] == "ana" and json.loads(audit["detail_json"])["count"] == 1
        assert again.control.clear_alarms("printer-1", "ana") == 0
    finally:
        again.ledger.close()


def test_an_unplugged_printer_keeps_link_lost_in_the_status(printer_agent, tmp_path):
    agent = printer_agent(disconnect_at=300, replug_s=1.0)
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 2000, heat=None), "test", member_id="m-4"
    )
    assert agent.wait_idle("printer-1", 30)
    status = wait_for(
        lambda: (s := agent.control.status("printer-1"))["state"] != "printing" and s, 5, "the job's end"
    )
    assert "link-lost" in [a["type"] for a in status["alarms"]], status
    # plugged back in, the printer answers and the machine is idle: the reason stays until a person clears it
    wait_for(lambda: agent.machines["printer-1"].state == "idle", 20, "idle after the printer came back")
    assert agent.control.status("printer-1")["alarms"] == status["alarms"]
    assert agent.control.command({"machine": "printer-1", "actor": "ana", "command": "clear-alarms",
                                  "args": {}}) == ("done", "1 alarm(s) cleared")  # fmt: skip
    assert agent.control.status("printer-1")["alarms"] == []


def test_unplugged_printer_ends_the_job_offline(printer_agent, tmp_path):
    agent = printer_agent(disconnect_at=300)
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 2000, heat=None), "test", member_id="m-4"
    )
    assert agent.wait_idle("printer-1", 30)
    (rec,) = records(agent)
    assert rec["job"]["outcome"] == "failed" and rec["job"]["stop_type"] == "offline"
    assert 0 < rec["job"]["lines_acknowledged"] < 2000


def test_locked_machine_takes_no_job_until_unlocked(printer_agent, tmp_path):
    agent = printer_agent()
    agent.control.lock("printer-1", "manager-1", "nozzle change")
    submit(
        agent.config, agent.ledger, "printer-1", job_file(tmp_path, 200, heat=None), "test", member_id="m-5"
    )
    time.sleep(1.0)  # real time: four dispatch passes that must not start it
    assert agent.ledger.jobs("printer-1")[0]["state"] == "queued"
    agent.control.unlock("printer-1", "manager-1")
    assert agent.wait_idle("printer-1", 30)
    assert agent.ledger.jobs("printer-1")[0]["state"] == "completed"


def test_waiting_for_idle_is_woken_by_the_jobs_end_and_sees_it_published(printer_agent, tmp_path):
    """wait_idle (the demo's, the tests' and bench/cpu.py's) sleeps until the pump has recorded and
    published the job's end: it looks at the queue once a dispatch tick at most, not 20 times a second
    (each look took the GIL from the streaming threads)."""
    agent = printer_agent()
    looks = []  # the pump's looks at a machine's jobs, under its lock or not
    for name in ("busy", "_busy"):
        look = getattr(agent.pump, name)
        setattr(agent.pump, name, lambda machine_id, look=look: looks.append(machine_id) or look(machine_id))
    job_id, _ = submit(agent.config, agent.ledger, "printer-1", job_file(tmp_path, 1500, None), "test")
    started = time.monotonic()
    assert agent.wait_idle("printer-1", 60)
    seconds = time.monotonic() - started
    events = [json.loads(r["payload"]) for r in agent.ledger.outbox_due(limit=1000) if r["kind"] == "event"]
    assert any(e["type"] == "job-completed" and e.get("job_id") == job_id for e in events), events
    assert [r["job"]["id"] for r in records(agent)] == [job_id]
    assert seconds > 0.5, "a job this long takes a while at the simulator's speed"
    assert len(looks) <= seconds / 0.25 + 3, (len(looks), seconds)
