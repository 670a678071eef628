"""systemd integration: sd_notify READY and a watchdog fed only while every machine thread turns;
the shipped units pass `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1: a ping every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    messages: list[tuple[float, str]] = []

    def read(seconds: float) -> list[str]:
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
        messages.extend((time.monotonic(), m) for m in got)
        return got

    yield read
    sock.close()


def test_watchdog_is_fed_until_a_machine_thread_is_stuck(tmp_path, start_sim, notify_socket):
    sim = start_sim("marlin", speed=10)
    machine = {"id": "p1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer"}  # fmt: skip
    agent = Agent(load_config(write_config(tmp_path / "agent.toml", [machine]))).start()
    try:
        assert agent.machines["p1"].wait_ready(15)
        agent.stuck_s = 1.5
        fed = notify_socket(2.0).count("WATCHDOG=1")
        assert fed >= 3, "pinged about every 0.5 s while healthy"
        agent.machines["p1"].loop._step = lambda: time.sleep(3600)  # real time: the machine thread hangs (a blocked call)
        notify_socket(2.5)  # the pings sent before the thread counted as stuck (1.5 s)
        assert notify_socket(2.0).count("WATCHDOG=1") == 0, "no ping while a machine thread is stuck"
        assert agent.watchdog.withheld >= 2
    finally:
        agent.machines["p1"].loop.closing = True
        agent.stop()


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    units = sorted((ROOT / "deploy" / "systemd").glob("*.*"))
    assert [u.name for u in units] == ["afn-agent.service", "afn-fleet.service", "afn-ledger-backup.service",
                                       "afn-ledger-backup.timer"]  # fmt: skip
    # verify needs the binaries the units name: give it a root where they exist
    for unit in units:
        text = unit.read_text().replace("/opt/afn-agent/venv/bin/afn-agent", shutil.which("true"))
        text = text.replace("/usr/bin/find", shutil.which("find") or "/usr/bin/find")
        (tmp_path / unit.name).write_text(text)
    p = subprocess.run(
        [analyze, "verify", *[str(tmp_path / u.name) for u in units]], capture_output=True, text=True
    )
    assert p.returncode == 0 and not p.stderr.strip(), p.stdout + p.stderr
