"""Issue 15, class 6: one queued job that cannot start (its owner is not in a session at the machine)
used to block everything queued behind it. Now it goes back to held, reported, and the queue moves on."""

from __future__ import annotations

import json

from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for
from tests.integration.test_access import badge_printer, read_badge  # noqa: F401  (the fixture)


def job(agent, tmp_path, name: str, member: str) -> str:
    path = circle_gcode(tmp_path / f"{name}.gcode", 150, centre=(110, 110))
    return submit(agent.config, agent.ledger, "printer-1", path, "upload", held=True, member_id=member)[0]


def held_events(agent) -> list[dict]:
    rows = [r for r in agent.ledger.audit_log("printer-1", 1000) if r["action"] == "job-hold"]
    return [json.loads(r["detail_json"]) | {"job": r["subject"]} for r in rows]


def test_a_job_released_outside_its_owners_session_does_not_block_the_next(badge_printer, tmp_path):  # noqa: F811
    agent = badge_printer()
    ana = job(agent, tmp_path, "ana", "ana")
    agent.ledger.release(ana, "released with no session open")  # as a stale kiosk or a script could
    read_badge(agent, "tom")
    tom = job(agent, tmp_path, "tom", "tom")
    agent.control.release_job(tom, "session:tom")
    wait_for(lambda: agent.ledger.job(tom)["state"] == "completed", 60, "Tom's job ran")
    assert agent.ledger.job(ana)["state"] == "held"
    assert [e["job"] for e in held_events(agent)] == [ana] and "owner" in held_events(agent)[0]["reason"]
    read_badge(agent, "tom")  # out
    read_badge(agent, "ana")  # in: her held job starts on badge-in, as any held job of hers
    wait_for(lambda: agent.ledger.job(ana)["state"] == "completed", 60, "Ana's job ran in her session")


def test_start_before_the_bed_clear_confirmation_then_badge_out(badge_printer, tmp_path):  # noqa: F811
    agent = badge_printer(machine_extra={"confirm_clear": True})
    read_badge(agent, "ana")
    first = job(agent, tmp_path, "first", "ana")
    agent.control.release_job(first, "session:ana")
    wait_for(lambda: agent.ledger.job(first)["state"] == "completed", 60, "the first job")
    second = job(agent, tmp_path, "second", "ana")
    agent.control.release_job(second, "session:ana")  # Start pressed, but the bed is not confirmed clear
    assert agent.ledger.job(second)["state"] == "queued"
    read_badge(agent, "ana")  # and she leaves
    read_badge(agent, "tom")
    assert agent.control.confirm("printer-1", "session:tom")
    tom = job(agent, tmp_path, "tom", "tom")
    agent.control.release_job(tom, "session:tom")
    wait_for(lambda: agent.ledger.job(tom)["state"] == "completed", 60, "Tom's job ran")
    assert agent.ledger.job(second)["state"] == "held"
    assert [e["job"] for e in held_events(agent)] == [second]
