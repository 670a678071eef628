"""Reload without restart, and stops that never kill a job, on a real `afn-agent run` process:

- `kill -HUP` while two simulated printers stream: a new API key, a new tariff and a new member (pulled
  from the booking system) take effect at once; both jobs complete with every line executed once, priced
  by the tariff they started under; the next job is priced by the new one;
- SIGTERM (what `systemctl stop` sends) mid-job: within `stop_grace_s` the job completes and the agent
  exits; past it the job is interrupted, `job-interrupted` is published (the outbox), the printer takes
  its safe state and the machine waits for a person's confirmation.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from afn_agent.agent import open_ledger
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.broker import free_port
from tests.helpers import api_table, wait_for, write_config
from tests.integration.test_access import SECRET, Booking, snapshot


def run_agent(config, log):
    return subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def moves(path) -> list[str]:
    return [line.split(";")[0].strip() for line in path.read_text().splitlines() if line.startswith("G1")]


def executed_moves(sim) -> list[str]:
    return [command for _, command in sim.executed() if command.startswith("G1")]


def up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stop(agent, timeout=30) -> int:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        raise


@pytest.fixture
def directory_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Booking)  # the booking system's endpoint
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Booking.doc, Booking.full, Booking.hits = snapshot(version=1), None, []
    yield f"http://127.0.0.1:{server.server_address[1]}/directory"
    server.shutdown()


def test_hup_while_two_jobs_stream_changes_keys_tariffs_members_and_no_line(
    tmp_path, start_sim, directory_server
):
    sims = [start_sim("marlin", speed=1, move_ms=2.0) for _ in range(2)]
    machines = [{"id": f"printer-{i + 1}", "class": "fdm-printer", "profile": "marlin2", "port": str(s.link),
                 "baud": s.options["baud"], "tariff": "printer", "hold_uploads": False} for i, s in enumerate(sims)]  # fmt: skip
    config = write_config(tmp_path / "agent.toml", machines)
    access = f'\n[access]\nbadge_secret = "{SECRET}"\nsync_url = "{directory_server}"\nsync_token = "tok-123"\nsync_every_s = 3600\n'
    base, port = config.read_text(), free_port()
    config.write_text(base + api_table(port=port) + access)
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    jobs = {}
    for i in (1, 2):
        path = circle_gcode(tmp_path / f"ring-{i}.gcode", 4000, 0.1, centre=(110, 110))
        jobs[f"printer-{i}"] = (submit(cfg, ledger, f"printer-{i}", path, "cli", member_id="ana")[0], path)
    agent = run_agent(config, (tmp_path / "agent.log").open("w"))
    try:
        wait_for(
            lambda: all(ledger.job(j)["state"] == "running" for j, _ in jobs.values()), 30, "both running"
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: up(url), 20, "the agent's API")
        new_key = "reloaded-manager-key-0123456789"
        extra = f'\n[[api.keys]]\nname = "second-manager"\nrole = "manager"\nsha256 = "{hashlib.sha256(new_key.encode()).hexdigest()}"\n'  # fmt: skip
        assert httpx.get(f"{url}/v1/machines", headers={"X-Api-Key": new_key}).status_code == 403
        config.write_text(base.replace("per_active_minute = 0.10", "per_active_minute = 0.20")
                          + api_table(port=port) + extra + access)  # fmt: skip
        Booking.doc = snapshot(version=2)
        Booking.doc["members"].append({"id": "zoe", "name": "Zoé", "badges": ["0A00000222"],
                                         "trainings": [{"class": "fdm-printer"}]})  # fmt: skip
        lines_before = len(executed_moves(sims[0]))
        agent.send_signal(signal.SIGHUP)
        hup_at = time.monotonic()
        wait_for(lambda: httpx.get(f"{url}/v1/machines", headers={"X-Api-Key": new_key}).status_code == 200,
                 10, "the new key accepted")  # fmt: skip
        print(f"SIGHUP: the new key accepted {time.monotonic() - hup_at:.2f} s after the signal")
        assert all(ledger.job(j)["state"] == "running" for j, _ in jobs.values()), "running jobs untouched"
        wait_for(lambda: ledger.conn.execute("SELECT 1 FROM members WHERE id='zoe'").fetchone(), 10, "zoe")
        (row,) = [a for a in ledger.audit_log(None, 200) if a["action"] == "reload"]
        report = json.loads(row["detail_json"])
        assert "tariffs" in report["applied"] and any("API keys" in x for x in report["applied"])
        assert report["when_idle"] == {} and report["needs_restart"] == []
        assert (
            len(executed_moves(sims[0])) > lines_before
            or ledger.job(jobs["printer-1"][0])["state"] == "completed"
        )

        wait_for(
            lambda: all(ledger.job(j)["state"] == "completed" for j, _ in jobs.values()), 90, "both jobs"
        )
        after, _ = submit(load_config(config), ledger, "printer-1", circle_gcode(tmp_path / "next.gcode", 200, centre=(110, 110)),
                          "cli", member_id="zoe")  # fmt: skip
        wait_for(lambda: ledger.job(after)["state"] == "completed", 30, "the job after the reload")
        assert stop(agent) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    for sim, (machine_id, (_job, path)) in zip(sims, jobs.items(), strict=True):
        sim.stop()  # flushes its log of executed lines
        got = executed_moves(sim)
        want = moves(path)
        if machine_id == "printer-1":
            got = got[: len(want)]  # the job after the reload ran there too
        assert got == want, f"{machine_id}: every line once, in order"
    records = {r["job"]["id"]: r for _, r in ledger.usage_after(0, 10)}
    for job_id, _ in jobs.values():
        assert records[job_id]["tariff"]["per_active_minute"] == "0.1", "priced as it started"
    assert records[after]["tariff"]["per_active_minute"] == "0.2" and records[after]["member_id"] == "zoe"


def one_printer(tmp_path, sim, grace_s: float):
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    config = write_config(tmp_path / "agent.toml", [machine])
    config.write_text(
        config.read_text().replace("checkpoint_s = 1.0\n", f"checkpoint_s = 1.0\nstop_grace_s = {grace_s}\n")
    )
    cfg = load_config(config)
    assert cfg.stop_grace_s == grace_s
    return config, cfg, open_ledger(cfg)


def test_sigterm_within_the_grace_lets_the_job_finish(tmp_path, start_sim):
    sim = start_sim("marlin", speed=1, move_ms=2.0)
    config, cfg, ledger = one_printer(tmp_path, sim, 60)
    path = circle_gcode(tmp_path / "ring.gcode", 2500, 0.1, centre=(110, 110))
    job_id, _ = submit(cfg, ledger, "printer-1", path, "cli", member_id="ana")
    agent = run_agent(config, (tmp_path / "agent.log").open("w"))
    try:
        wait_for(lambda: ledger.job(job_id)["state"] == "running", 30, "the job running")
        agent.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    job = ledger.job(job_id)
    assert job["state"] == "completed", job["reason"]
    assert ledger.machine("printer-1")["needs_confirmation"] is None
    sim.stop()
    assert executed_moves(sim) == moves(path), "every line once: the stop waited for the job"
    log = (tmp_path / "agent.log").read_text()
    assert "waiting up to" in log


def test_sigterm_past_the_grace_interrupts_the_job_as_a_crash_would(tmp_path, start_sim):
    sim = start_sim("marlin", speed=1, move_ms=2.0)
    config, cfg, ledger = one_printer(tmp_path, sim, 2)
    path = circle_gcode(tmp_path / "long.gcode", 20000, 0.02, centre=(110, 110))
    job_id, _ = submit(cfg, ledger, "printer-1", path, "cli", member_id="ana")
    agent = run_agent(config, (tmp_path / "agent.log").open("w"))
    try:
        wait_for(lambda: ledger.job(job_id)["state"] == "running", 60, "the job running")
        asked = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        took = time.monotonic() - asked
    finally:
        if agent.poll() is None:
            agent.kill()
    print(f"SIGTERM past a 2 s grace: the agent exited {took:.2f} s after the signal")
    assert 2.0 <= took < 20, took
    job = ledger.job(job_id)
    assert (job["state"], job["stop_type"]) == ("interrupted", "offline")
    assert "grace of 2 s was over" in job["reason"]
    assert ledger.machine("printer-1")["needs_confirmation"] == "interrupted"
    events = [json.loads(r["payload"]) for r in ledger.outbox_due(limit=1000) if r["kind"] == "event"]
    interrupted = [e for e in events if e["type"] == "job-interrupted"]
    assert interrupted and interrupted[0]["job_id"] == job_id, [e["type"] for e in events]
    assert any(e["type"] == "safe-state" for e in events), "the printer took its safe state"
    (record,) = [r for _, r in ledger.usage_after(0, 10)]
    assert record["job"]["outcome"] == "interrupted" and record["job"]["lines_acknowledged"] > 0
    sim.stop()
    executed = [command for _, command in sim.executed()]
    last_move = max(i for i, c in enumerate(executed) if c.startswith("G1"))
    assert {"M104 S0", "M140 S0"} <= set(executed[last_move:]), "heaters off after the last move"


def test_a_machine_thread_change_waits_for_its_job_and_a_bad_file_changes_nothing(one_machine, tmp_path):
    from afn_agent.errors import InvalidInput
    from tests.helpers import under_way

    agent, sim = one_machine("printer-1", speed=2, move_ms=2.0)
    config = agent.config.path
    first, _ = submit(agent.config, agent.ledger, "printer-1", circle_gcode(tmp_path / "a.gcode", 2000, 0.1,
                      centre=(110, 110)), "cli", member_id="ana")  # fmt: skip
    old = agent.machines["printer-1"]
    under_way(old, 50)
    config.write_text(config.read_text().replace(f"baud = {sim.options['baud']}", "baud = 115200"))
    report = agent.reload("test")
    assert report["when_idle"] == {"printer-1": "baud"}, report
    second, _ = submit(agent.config, agent.ledger, "printer-1", circle_gcode(tmp_path / "b.gcode", 200,
                       centre=(110, 110)), "cli", member_id="ana")  # fmt: skip
    assert agent.machines["printer-1"] is old and agent.ledger.job(first)["state"] == "running"
    wait_for(
        lambda: agent.ledger.job(second)["state"] == "completed", 60, "the second job, on the new thread"
    )
    assert agent.ledger.job(first)["state"] == "completed"
    fresh = agent.machines["printer-1"]
    assert fresh is not old and fresh.link.baud == 115200 and not old.is_alive()
    started = {t["job_id"]: t["at"] for t in _transitions(agent, "starting")}
    restarted = [a for a in agent.ledger.audit_log("printer-1") if a["action"] == "reconfigure"]
    assert restarted and started[second] > restarted[0]["at"], "nothing started before the new thread"

    good = config.read_text()
    config.write_text(good.replace('tariff = "printer"', 'tariff = "nonesuch"'))
    with pytest.raises(
        InvalidInput, match=r"agent.toml: line \d+: machines\[0\] \(printer-1\).tariff: no \[tariffs.nonesuch\]"
    ):
        agent.reload("test")
    assert agent.config.machine("printer-1").tariff == "printer", "a file that does not load changes nothing"
    (refused,) = [a for a in agent.ledger.audit_log() if a["action"] == "reload" and a["result"] == "refused"]
    assert "nonesuch" in refused["detail_json"]


def _transitions(agent, state: str) -> list[dict]:
    rows = agent.ledger.conn.execute("SELECT job_id, at FROM job_transitions WHERE to_state=?", (state,))
    return [dict(r) for r in rows]
