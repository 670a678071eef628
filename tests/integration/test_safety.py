"""Safety guards against the simulators: recovery after kill -9, stall, idle heat, doors and
interlocks, session limits; each guard's timing taken from the profile or the config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from afn_agent.agent import open_ledger
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import profile_file, wait_for, write_config


def events(agent, kind=None):
    rows = agent.ledger.conn.execute("SELECT payload FROM outbox WHERE kind='event' ORDER BY seq")
    out = [json.loads(r[0]) for r in rows]
    return [e for e in out if kind is None or e["type"] == kind]


def executed_after(sim, mark: int) -> list[str]:
    return [cmd for _, cmd in sim.executed()[mark:]]


def agent_process(config, log):
    return subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


@pytest.mark.parametrize("kind", ["printer", "mill"])
def test_kill_9_then_safe_state_first_and_confirmation_before_the_next_job(tmp_path, start_sim, kind):
    if kind == "printer":
        sim = start_sim("marlin", speed=4, move_ms=3.0)
        machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "tariff": "printer"}
        job = circle_gcode(tmp_path / "job.gcode", 20000, 0.02, heat=(200, 60), centre=(110, 110))
        expect = ["M104 S0", "M140 S0"]
    else:
        sim = start_sim("grbl", speed=4, move_ms=3.0)
        machine = {"id": "mill-1", "class": "cnc-mill", "profile": "grbl-1.1", "tariff": "printer"}
        job = circle_gcode(tmp_path / "job.nc", 20000, 0.02, flavour="grbl")
        expect = ["M5", "M9"]
    machine.update(port=str(sim.link), baud=sim.options["baud"], hold_uploads=False)
    config = write_config(tmp_path / "agent.toml", [machine])
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    mid = machine["id"]
    submit(cfg, ledger, mid, job, "cli")
    proc = agent_process(config, (tmp_path / "a1.log").open("w"))
    try:
        wait_for(lambda: ledger.jobs(mid)[0]["state"] in ("running", "heating"), 30, "the job on the machine")
        time.sleep(2.0)  # real time: the job runs past a checkpoint before the crash
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1.0)  # real time: the machine runs out what it had buffered; it stays powered, heaters and all
    mark = len(sim.executed())
    started = time.monotonic()
    proc = agent_process(config, (tmp_path / "a2.log").open("w"))
    try:
        wait_for(lambda: all(c in executed_after(sim, mark) for c in expect), 10, f"{expect} at the machine")
        took = time.monotonic() - started
        assert took < 10, took
        assert ledger.machine(mid)["needs_confirmation"] == "crash-recovery"
        submit(cfg, ledger, mid, job, "cli")  # a new job must wait for a person
        time.sleep(2.0)  # real time: dispatch passes that must not start it
        assert ledger.jobs(mid, ("queued",)), "no job starts before a person confirms"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    after = executed_after(sim, mark)
    if kind == "mill":
        assert sim.stop().get("resets", 0) >= 1, "the soft reset reached the controller"
    moves = [c for c in after[: after.index(expect[0])] if c.startswith(("G0", "G1"))]
    assert len(moves) <= 8, f"only what the firmware had already queued may run first: {moves}"
    safe = [
        e
        for e in (json.loads(r[0]) for r in ledger.conn.execute("SELECT payload FROM outbox"))
        if e.get("type") == "safe-state"
    ]
    assert safe and "recovery" in safe[0]["reason"]
    assert any(a["action"] == "job-interrupted" for a in ledger.audit_log(mid))
    print(f"{kind}: safe state at the machine {took:.2f} s after the restart")


@pytest.fixture
def guarded_machine(one_machine):
    """guarded_machine(kind="marlin", profile=None, safety="", extra_machine=None, **sim_options) -> (agent, sim)."""
    return lambda kind="marlin", **kw: one_machine("m1", kind, **kw)


def test_stall_raises_an_alarm_then_the_safe_state(guarded_machine, tmp_path):
    prof = profile_file(tmp_path, "marlin2", timeouts={"ok_s": 1.0, "probes": 2, "stall_grace_s": 2.0})
    agent, _sim = guarded_machine(profile=prof, stall_at=300)
    submit(
        agent.config,
        agent.ledger,
        "m1",
        circle_gcode(tmp_path / "j.gcode", 3000, 0.05, centre=(110, 110)),
        "cli",
    )
    stall = wait_for(lambda: events(agent, "stall"), 15, "the stall alarm")[0]
    safe = wait_for(lambda: events(agent, "safe-state"), 10, "the safe state")[0]
    assert stall["safe_state_in_s"] == 2.0 and safe["reason"] == "stall" and safe["actions"] == ["M112"]
    gap = safe["t"] - stall["t"]
    assert 1.8 <= gap <= 3.5, gap
    assert agent.wait_idle("m1", 10)
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["stop_type"] == "fault"
    assert agent.machines["m1"].state == "fault", "a stalled machine waits for a person"


def test_idle_heated_printer_is_cooled(guarded_machine, tmp_path):
    agent, sim = guarded_machine(safety="\n[safety]\nidle_heat_s = 2\n")
    job = tmp_path / "heat.gcode"
    job.write_text("M104 S200\nM140 S60\nG28\nG1 X10 Y10 F3000\n")  # ends with the heaters on
    submit(agent.config, agent.ledger, "m1", job, "cli")
    assert agent.wait_idle("m1", 20)
    ended = time.monotonic()
    off = wait_for(lambda: events(agent, "idle-heat-off"), 10, "heaters off")[0]
    took = time.monotonic() - ended
    assert 1.5 <= took <= 5, took
    assert off["lines"] == ["M104 S0", "M140 S0"]
    wait_for(lambda: "M140 S0" in [c for _, c in sim.executed()], 5, "the commands at the printer")


def test_door_opened_mid_job_holds_the_laser_beam_off_and_does_not_resume(guarded_machine, tmp_path):
    agent, _sim = guarded_machine(kind="grbl", door_at=400, door_open_s=1.0)
    job = circle_gcode(tmp_path / "cut.nc", 3000, 0.05, flavour="laser")
    submit(agent.config, agent.ledger, "m1", job, "cli")
    wait_for(lambda: events(agent, "door-open"), 20, "the door event")
    m = agent.machines["m1"]
    wait_for(lambda: m.state == "paused", 5, "the job held")
    wait_for(lambda: m.grbl_fields.get("FS", "").endswith(",0"), 5, "the beam off")
    time.sleep(2.0)  # real time: the door closes after 1 s; nothing may resume meanwhile
    assert m.state == "paused" and not m.grbl_state.startswith("Run"), "closing the door resumes nothing"
    assert "Pn" not in m.grbl_fields
    m.resume()  # a person
    assert agent.wait_idle("m1", 30)
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["outcome"] == "completed" and rec["time_s"]["paused_s"] >= 2.0


def test_interlock_blocks_the_start_and_holds_mid_job(guarded_machine, tmp_path):
    agent, _sim = guarded_machine(extra_machine={"interlock": "sim"})
    lid = agent.guards.interlocks["m1"]
    lid.opened = True
    wait_for(lambda: agent.guards.blocked("m1"), 5, "the open lid seen")
    submit(
        agent.config,
        agent.ledger,
        "m1",
        circle_gcode(tmp_path / "j.gcode", 4000, 0.03, centre=(110, 110)),
        "cli",
    )
    time.sleep(1.0)  # real time: dispatch passes that must not start it
    assert agent.ledger.jobs("m1")[0]["state"] == "queued", "no start with the lid open"
    lid.opened = False
    wait_for(lambda: agent.machines["m1"].state == "printing", 10, "the start once closed")
    lid.opened = True
    wait_for(lambda: agent.machines["m1"].state == "paused", 5, "held")
    alarm = wait_for(lambda: events(agent, "interlock-open"), 5, "the alarm")[-1]
    assert alarm["held"] is True
    lid.opened = False
    wait_for(lambda: not agent.guards.blocked("m1"), 5, "the closed lid seen")
    time.sleep(0.5)  # real time: a resume, if there were one, would have come
    assert agent.machines["m1"].state == "paused", "closing does not resume"
    agent.machines["m1"].resume()
    assert agent.wait_idle("m1", 30)


@pytest.mark.parametrize("policy", ["pause", "stop"])
def test_session_end_during_a_job_warns_then_acts(guarded_machine, tmp_path, policy):
    secret = "site-badge-secret-0123456789"
    agent, _sim = guarded_machine(extra_machine={"reader": "sim", "session_end": policy},
                     safety=f'\n[safety]\nsession_warn_s = 3\n\n[access]\nbadge_secret = "{secret}"\n')  # fmt: skip
    now = datetime.now(UTC)
    agent.access.directory.apply_snapshot({"version": 1, "members": [
        {"id": "ana", "name": "Ana", "badges": ["0A00123456"], "trainings": [{"class": "fdm-printer"}]},
        {"id": "bob", "name": "Bob", "badges": ["0A00BBBBBB"], "trainings": [{"class": "fdm-printer"}]}],
        "bookings": [{"id": "next", "machine": "m1", "member": "bob", "start": (now + timedelta(seconds=6)).isoformat(),
                      "end": (now + timedelta(hours=1)).isoformat()}]}, "test")  # fmt: skip
    assert agent.control.badge("m1", "0A00123456").allowed
    submit(agent.config, agent.ledger, "m1", circle_gcode(tmp_path / "j.gcode", 40000, 0.004, centre=(110, 110)), "cli",
           member_id="ana")  # fmt: skip
    warned = wait_for(lambda: events(agent, "session-ending"), 10, "the warning")[0]
    assert warned["then"] == policy and warned["minutes_left"] <= 0.05 + 0.01
    ended = wait_for(lambda: events(agent, "session-ended"), 10, "the end")[0]
    assert ended["action"] == policy
    if policy == "pause":
        wait_for(lambda: agent.machines["m1"].state == "paused", 5, "paused")
        agent.control.cancel("m1", "member")
    assert agent.wait_idle("m1", 30)
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["stop_type"] == ("permission" if policy == "stop" else "cancelled")


def test_a_safe_state_is_taken_only_once_its_event_is_queued(guarded_machine):
    """The agent's stop waits for `safe_state_taken()` and then stops the pump: taken must not be
    true before the safe state's event is on the pump's queue (it was, by a line, and the event was lost)."""
    agent, _sim = guarded_machine()
    worker = agent.machines["m1"]
    seen: list[bool] = []
    emit = worker.loop._emit

    def watching(kind, **fields):
        if kind.kind == "safe-state":
            seen.append(worker.safe_state_taken())
        emit(kind, **fields)

    worker.loop._emit = watching
    worker.safe_state("test: asked for")
    wait_for(lambda: worker.safe_state_taken(), 10, "the safe state taken")
    assert seen == [False], "taken was reported before the event was queued"
    wait_for(lambda: events(agent, "safe-state"), 5, "the safe state's event")


def test_the_stop_publishes_what_is_still_queued_when_the_pump_ends(guarded_machine):
    """Events still queued when the pump stops are published by the agent's stop, not dropped: the
    pump is held inside one event while a second is queued and the stop is asked for."""
    agent, _sim = guarded_machine()
    worker, pump = agent.machines["m1"], agent.pump
    inside, gate = threading.Event(), threading.Event()
    handle = pump.handle

    def held(event, now):
        if event.kind == "safe-state" and not gate.is_set():
            inside.set()
            gate.wait(10)
        handle(event, now)

    pump.handle = held
    worker.safe_state("test: first")
    wait_for(inside.is_set, 10, "the pump inside the first safe state")
    worker.safe_state("test: second, queued as the pump stops")
    wait_for(worker.safe_state_taken, 10, "the second safe state taken")
    pump._stop.set()  # the pump's loop ends after the event it holds
    gate.set()
    agent.stop()
    assert [e["reason"] for e in events(agent, "safe-state")] == [
        "test: first",
        "test: second, queued as the pump stops",
    ]
