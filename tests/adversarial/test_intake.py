"""Issue 15, fourth class: identical uploads shared one spool file, so refusing or deleting one job took
the other's file away and that job then faulted."""

from __future__ import annotations

from pathlib import Path

from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode


def test_two_uploads_of_one_file_are_two_files_and_removing_one_keeps_the_other(one_machine, tmp_path):
    agent, _sim = one_machine("m1")
    src = circle_gcode(tmp_path / "same.gcode", 200, centre=(110, 110))
    first, _ = submit(agent.config, agent.ledger, "m1", src, "upload", held=True)
    second, _ = submit(agent.config, agent.ledger, "m1", src, "upload", held=True)
    p1, p2 = Path(agent.ledger.job(first)["path"]), Path(agent.ledger.job(second)["path"])
    assert p1 != p2 and p1.read_bytes() == p2.read_bytes()
    agent.control.remove_job(first, "manager-ana")
    assert not p1.exists() and p2.exists()
    agent.control.release_job(second, "manager-ana", manager=True)
    assert agent.wait_idle("m1", 60)
    job = agent.ledger.job(second)
    assert job["state"] == "completed", job
