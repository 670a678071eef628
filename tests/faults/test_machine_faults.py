"""Faults on the machine side, each asserting one record per job, no duplicates, the right end state."""

from __future__ import annotations

import subprocess
import time

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.analyzer import analyze_path
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for, write_config


@pytest.fixture
def marlin_p1(one_machine):
    """marlin_p1(**sim_options) -> (agent, sim): one simulated Marlin printer behind a started agent."""
    return lambda **sim_options: one_machine("p1", **sim_options)


def job(tmp_path, n=0, segments=2000):
    return circle_gcode(tmp_path / f"j{n}.gcode", segments, 150 / segments, centre=(110, 110))


def one_record_per_job(agent) -> list[dict]:
    records = [r for _, r in agent.ledger.usage_after(0, 10_000)]
    assert len({r["job"]["id"] for r in records}) == len(records), "a job billed twice"
    assert len({r["record_id"] for r in records}) == len(records)
    return records


def test_corrupted_lines_and_lost_oks_bill_exactly_what_the_file_says(marlin_p1, tmp_path):
    agent, sim = marlin_p1(corrupt=0.01, lost_ok=0.01, seed=7)
    path = job(tmp_path, segments=4000)
    submit(agent.config, agent.ledger, "p1", path, "cli")
    assert agent.wait_idle("p1", 120)
    (rec,) = one_record_per_job(agent)
    assert rec["job"]["outcome"] == "completed"
    assert rec["material_total"]["mm"] == pytest.approx(
        analyze_path(path, load_profile("marlin2")).material_mm, rel=1e-9
    )
    stats = sim.stop()
    assert stats["lines_corrupted"] > 10 and stats["oks_lost"] > 10, stats


def test_printer_reset_mid_job(marlin_p1, tmp_path):
    agent, _sim = marlin_p1(reset_at=800)
    submit(agent.config, agent.ledger, "p1", job(tmp_path), "cli")
    assert agent.wait_idle("p1", 60)
    (rec,) = one_record_per_job(agent)
    assert rec["job"]["outcome"] == "failed" and 0 < rec["job"]["lines_acknowledged"] < 2000
    deadline = time.monotonic() + 20
    while agent.machines["p1"].state != "idle" and time.monotonic() < deadline:
        time.sleep(0.1)
        if agent.machines["p1"].state == "fault":
            agent.machines["p1"].reconnect()  # a person resets the printer's connection
            wait_for(lambda: agent.machines["p1"].state != "fault", 5, "the reconnection under way")
    submit(agent.config, agent.ledger, "p1", job(tmp_path, 1, 300), "cli")
    assert agent.wait_idle("p1", 60)
    assert [r["job"]["outcome"] for r in one_record_per_job(agent)] == ["failed", "completed"]


def test_usb_unplug_and_replug(marlin_p1, tmp_path):
    agent, _sim = marlin_p1(disconnect_at=700, replug_s=1.5)
    submit(agent.config, agent.ledger, "p1", job(tmp_path), "cli")
    assert agent.wait_idle("p1", 60)
    (rec,) = one_record_per_job(agent)
    assert rec["job"]["outcome"] == "failed" and rec["job"]["stop_type"] == "offline"
    deadline = time.monotonic() + 30
    while agent.machines["p1"].state != "idle" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent.machines["p1"].state == "idle", "the agent reopened the port by itself"
    submit(agent.config, agent.ledger, "p1", job(tmp_path, 1, 300), "cli")
    assert agent.wait_idle("p1", 60)
    assert [r["job"]["outcome"] for r in one_record_per_job(agent)] == ["failed", "completed"]


def test_disk_full_while_writing_the_ledger(tmp_path, start_sim):
    """The ledger's filesystem fills up mid-job (a real one: a 4 MB tmpfs): the job's end waits, the
    health says why, nothing is corrupted; once there is room again the record is written, once."""
    data = tmp_path / "data"
    data.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the disk-full case is not exercised")
    try:
        sim = start_sim("marlin", speed=10)
        machine = {"id": "p1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", [machine])
        path.write_text(path.read_text().replace("checkpoint_s = 1.0", "checkpoint_s = 1.0\nmin_free_mb = 0"))
        agent = Agent(load_config(path)).start()  # (a 4 MB disk: no free-space reserve for uploads)
        try:
            assert agent.machines["p1"].wait_ready(15)
            submit(agent.config, agent.ledger, "p1", job(tmp_path, segments=3000), "cli")
            deadline = time.monotonic() + 10
            while agent.machines["p1"].state != "printing" and time.monotonic() < deadline:
                time.sleep(0.05)
            filler = data / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True
            )  # until full
            deadline = time.monotonic() + 60
            while not agent.ledger_error and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "full" in agent.ledger_error or "disk" in agent.ledger_error, agent.ledger_error
            assert agent.pump.is_alive()
            filler.unlink()  # room again
            deadline = time.monotonic() + 30
            while not agent.ledger.usage_after() and time.monotonic() < deadline:
                time.sleep(0.1)
            (rec,) = one_record_per_job(agent)
            assert rec["job"]["outcome"] == "completed"
            time.sleep(1.5)  # real time: a pump retry after the disk came back
            assert agent.ledger_error == ""
            assert agent.ledger.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            agent.stop()
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)
