"""Issue 15, class 7: a graceful stop (SIGTERM) mid-job under-counted what ran (328 lines billed of 739
the firmware had answered) and let the next job start on an uncleared bed. Now the machine thread's
last figures are read before the job is closed, and the machine waits for a person's confirmation."""

from __future__ import annotations

import json
import signal
import time

from afn_agent.agent import open_ledger
from afn_agent.config import load_config
from afn_agent.gcode.lexer import wire_text
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for, write_config
from tests.integration.test_agent_crash import executed_filament, run_agent


def test_sigterm_mid_job_bills_what_the_firmware_answered(tmp_path, start_sim):
    sim = start_sim("marlin", speed=4, move_ms=3.0)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    config = write_config(tmp_path / "agent.toml", [machine], checkpoint_s=1.0)
    config.write_text(config.read_text().replace("checkpoint_s", "stop_grace_s = 0\ncheckpoint_s"))  # at once
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    job = circle_gcode(tmp_path / "job.gcode", 20000, 0.02, centre=(110, 110))
    job_id, _ = submit(cfg, ledger, "printer-1", job, "test")
    with (tmp_path / "agent.log").open("w") as log:
        agent = run_agent(config, log)
        try:
            wait_for(lambda: ledger.job(job_id)["state"] == "running", 60, "running")
            time.sleep(2.6)  # real time: between two progress reports and two checkpoints
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
    ended = ledger.job(job_id)
    assert ended["state"] == "interrupted"
    record = json.loads(
        ledger.conn.execute("SELECT record_json FROM usage_records WHERE job_id=?", (job_id,)).fetchone()[0]
    )
    job_lines = [text for line in job.read_text().splitlines() if (text := wire_text(line))]
    commands = len(job_lines)
    ran = [command for label, command in sim.executed() if int(label) > 2]  # after M110, M115, M155
    executed = 0  # the job's lines the firmware ran (then come the cancel script and the safe state)
    while executed < min(len(ran), commands) and ran[executed] == job_lines[executed]:
        executed += 1
    assert {"M104 S0", "M140 S0", "M84"} <= set(ran[executed:]), "past the grace: cancelled, then safe"
    billed = record["job"]["lines_acknowledged"]
    assert billed == executed, (billed, executed)  # every line the firmware ran, none it did not
    assert billed < commands
    filament = executed_filament(sim)
    assert abs(record["material_total"]["mm"] - filament) <= 0.01 * filament + 0.5, (
        record["material_total"],
        filament,
    )
    assert ledger.machine("printer-1")["needs_confirmation"] == "interrupted", (
        "the next job waits for a person"
    )
