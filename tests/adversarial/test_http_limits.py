"""Issue 15, class 2: idle and trickling HTTP clients. ~1,100 of them once filled the 1024-fd table:
/health stopped answering and the next job could not open its file. Now connections are capped in all
and per client, headers and bodies have deadlines, and the fds the machines and the ledger need are kept."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

import requests

from afn_agent.api.guard import connection_ceiling
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import api_table, wait_for

LIMITS = "max_connections = 60\nmax_connections_per_client = 20\nheader_timeout_s = 2\nbody_timeout_s = 2\n"


def attacker(source: str, port: int, n: int, first: bytes = b"") -> list[socket.socket]:
    """`n` connections from `source` (a loopback address other than 127.0.0.1), each sending `first`."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            if first:
                s.sendall(first)
        except OSError:
            s.close()
            continue
        out.append(s)
    return out


def closed_by_server(s: socket.socket) -> bool:
    try:
        s.settimeout(0.1)
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_ceiling_leaves_fds_for_machines_and_the_ledger():
    assert connection_ceiling(256, 2, fd_limit=1024) == 256
    assert connection_ceiling(2000, 4, fd_limit=1024) == 1024 - 64 - 16
    assert connection_ceiling(2000, 1, fd_limit=60) == 16  # never below the local reserve + 8


def test_idle_and_slow_clients_are_capped_and_timed_out_while_a_job_runs(one_machine, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="afn_agent.api")
    agent, _sim = one_machine("m1", safety=api_table(extra=LIMITS))
    port = agent.api.port
    guard = agent.api.guard
    before = fds()
    socks: list[socket.socket] = []
    for i, first in enumerate((b"", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"", b"")):
        socks += attacker(f"127.0.0.{i + 2}", port, 40, first)
    # a body that stops after 10 of its 1000 bytes
    stalled = attacker(
        "127.0.0.9", port, 1, b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"
    )
    time.sleep(0.5)  # real time: the attackers' connections reach the server
    assert len(guard.open) <= guard.max_total - 8, "remote clients leave the local reserve free"
    assert max(guard.per_client.values()) <= 20
    server_side = fds() - before - len(socks) - len(stalled)  # the attackers' ends are in this process too
    assert server_side <= guard.max_total - 8 + 2, server_side
    assert guard.refused >= 4 * 40 + 1 - (guard.max_total - 8)
    # the kiosk and health probes on this host still get in, at once
    t0 = time.monotonic()
    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
    assert time.monotonic() - t0 < 1.0 and health["http"]["open"] <= health["http"]["ceiling"]
    # a job opens its file and runs while the attack goes on
    job_id, _ = submit(
        agent.config, agent.ledger, "m1", circle_gcode(tmp_path / "j.gcode", 200, centre=(110, 110)), "cli"
    )
    for s in socks:  # the trickling clients keep trickling
        with contextlib.suppress(OSError):
            s.send(b"a")
    wait_for(
        lambda: all(closed_by_server(s) for s in socks + stalled), 8, "every idle or slow connection closed"
    )
    assert guard.timed_out >= 1 and agent.ledger.job(job_id)["state"] in (
        "queued",
        "starting",
        "running",
        "completed",
    )
    assert agent.wait_idle("m1", 60) and agent.ledger.job(job_id)["state"] == "completed"
    wait_for(lambda: len(guard.open) == 0, 5, "no connection left")
    assert not agent.api.server.server_state.connections, "uvicorn's own bookkeeping is clean too"
    warnings = [r for r in caplog.records if r.name == "afn_agent.api"]
    assert len(warnings) <= 4, f"{len(warnings)} log lines for {guard.refused + guard.timed_out} connections"
    for s in socks + stalled:
        s.close()
