"""`kill -9` of a real agent process mid-job, then a restart: one interrupted record, close to the truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from afn_agent.agent import open_ledger
from afn_agent.config import load_config
from afn_agent.gcode.analyzer import Analyzer
from afn_agent.gcode.lexer import lex
from afn_agent.intake import submit
from afn_agent.ledger.usage import parse_iso, reprice
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for, write_config


def run_agent(config, log, *flags: str):
    return subprocess.Popen(
        [sys.executable, "-m", "afn_agent", "run", *flags, "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def executed_filament(sim) -> float:
    """What the simulated printer really extruded: its log of executed commands, read by the analyzer."""
    analyzer = Analyzer()
    for n, (_, command) in enumerate(sim.executed(), 1):
        if (cmd := lex(command, n)) is not None:
            analyzer.feed(cmd)
    return analyzer.material.pushed_mm()


@pytest.mark.parametrize("kill_in", ["heating", "running"])
def test_kill_9_mid_job_bills_one_interrupted_record(tmp_path, start_sim, kill_in):
    sim = start_sim("marlin", speed=1 if kill_in == "heating" else 4, move_ms=3.0)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    config = write_config(tmp_path / "agent.toml", [machine], checkpoint_s=1.0)
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    job = circle_gcode(tmp_path / "job.gcode", 20000, 0.02, heat=(200, 60), centre=(110, 110))
    job_id, _ = submit(cfg, ledger, "printer-1", job, "test", member_id="m-9")

    log = (tmp_path / "agent1.log").open("w")
    agent = run_agent(config, log)
    try:

        def there() -> bool:  # "running" means after the heat waits (a job also runs before them)
            heated = any(t["to_state"] == "heating" for t in ledger.transitions(job_id))
            return ledger.job(job_id)["state"] == kill_in and (kill_in == "heating" or heated)

        wait_for(there, 60, f"job {kill_in}")
        time.sleep(3.3)  # real time: past a few checkpoints, between two of them
        assert ledger.job(job_id)["state"] == kill_in
        agent.send_signal(signal.SIGKILL)
        killed_at = time.time()
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    started = parse_iso(ledger.job(job_id)["started_at"]).timestamp()
    time.sleep(0.5)  # real time: the firmware finishes what it had buffered (a few lines)
    sim.stop()  # flushes its log of executed commands; recovery needs no machine
    truth_s = killed_at - started
    truth_mm = executed_filament(sim)
    assert ledger.usage_after() == [], "no record while the agent is dead"

    # the printer is gone (its simulator stopped): recovery needs no machine, the agent must still start
    agent = run_agent(config, (tmp_path / "agent2.log").open("w"), "--wait-for-ports")
    try:
        recs = wait_for(lambda: ledger.usage_after(), 20, "the interrupted record")
        time.sleep(1.0)  # real time: a second record, if there were one, would follow within this
        recs = ledger.usage_after()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
    assert len(recs) == 1
    rec = recs[0][1]
    assert rec["job"]["id"] == job_id
    assert rec["job"]["outcome"] == "interrupted" and rec["job"]["stop_type"] == "offline"
    assert rec["replayed"] is True
    print(
        f"kill -9 while {kill_in}: total {rec['time_s']['total_s']:.2f} s vs {truth_s:.2f} s; "
        f"filament {rec['material_total']['mm']:.2f} mm vs {truth_mm:.2f} mm executed"
    )
    assert abs(rec["time_s"]["total_s"] - truth_s) <= 5.0, (rec["time_s"], truth_s)
    if kill_in == "running":
        rate = truth_mm / max(rec["time_s"]["active_s"], 1e-6)  # mm per second of streaming
        assert truth_mm > 0
        assert abs(rec["material_total"]["mm"] - truth_mm) <= 5.0 * rate, (rec["material_total"], truth_mm)
        assert rec["time_s"]["heating_s"] > 0
    else:
        assert rec["time_s"]["heating_s"] > 2.0 and rec["material_total"]["mm"] == truth_mm == 0
    assert rec["price"] == reprice(rec)
    # a third start finds nothing left to close: billed once
    agent = run_agent(config, (tmp_path / "agent3.log").open("w"), "--wait-for-ports")
    time.sleep(2.0)  # real time: the third start and its recovery pass (which must find nothing)
    agent.send_signal(signal.SIGTERM)
    agent.wait(20)
    assert len(ledger.usage_after()) == 1
