"""`afn-agent run` that cannot start says why in one sentence, with its own exit code, and publishes
nothing (checked on a real Mosquitto by a subscriber to everything the agent could send): the API's port
taken (it used to end in a traceback after "online" and the Home Assistant discovery had gone out), the
broker down, the broker refusing the agent's password, a ledger that is not a database or not a file."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from afn_agent.startup import Exit
from tests.broker import Client, free_port, password
from tests.helpers import api_table, write_config


@pytest.fixture
def lab(tmp_path, broker, start_sim):
    """An agent config for one simulated printer on the test broker, and a subscriber to all it may send."""
    sim = start_sim("marlin", speed=10)
    watcher = Client(broker, "fleet")
    watcher.subscribe("afn/v1/fablab/#")
    watcher.subscribe("homeassistant/#")

    def config(api_port: int = 0, **bus) -> str:
        machines = [{"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                     "baud": sim.options["baud"], "tariff": "printer"}]  # fmt: skip
        table = {"host": "127.0.0.1", "port": broker.port, "username": "pi-printers",
                 "password": password("pi-printers"), "home_assistant": True, **bus}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", machines, broker=table)
        path.write_text(path.read_text() + api_table(port=api_port))
        return str(path)

    yield config, watcher, tmp_path
    watcher.close()


def run(config: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afn_agent", "run", "--config", config], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def one_sentence(out: subprocess.CompletedProcess, code: Exit, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("afn-agent: not starting: ")]
    assert len(said) == 1, out.stderr
    for word in words:
        assert word in said[0], said[0]


def nothing_published(watcher: Client) -> None:
    time.sleep(1.0)  # real time: anything the agent sent would have arrived by now
    assert not watcher.received(), [t for t, _, _ in watcher.received()]


def test_a_taken_api_port(lab):
    config, watcher, _ = lab
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run(config(api_port=port))
    one_sentence(out, Exit.PORT_TAKEN, f"port {port}", "already in use", "[api].port")
    nothing_published(watcher)


def test_the_broker_down_is_fatal_only_when_required(lab):
    """By default a broker out of reach is said, and the agent runs on its outbox (a Pi that boots before
    the lab's server); `required = true` refuses to start."""
    config, watcher, _ = lab
    out = run(config(port=free_port(), required=True))
    one_sentence(out, Exit.BROKER_DOWN, "cannot be reached", "Connection refused")
    nothing_published(watcher)
    proc = subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", config(port=free_port())],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "cannot be reached" in first and "running without it" in first, first
        time.sleep(2.0)  # real time: still running
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_the_broker_refuses_the_password(lab):
    config, watcher, _ = lab
    out = run(config(password="not-the-password"))
    one_sentence(out, Exit.BROKER_REFUSED, "refused the agent as user 'pi-printers'", "password")
    nothing_published(watcher)


def test_an_unreadable_ledger(lab):
    config, watcher, tmp_path = lab
    path = config()
    ledger = tmp_path / "data" / "ledger.sqlite3"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"these are not the pages of a database\n" * 200)
    one_sentence(run(path), Exit.LEDGER, str(ledger), "restore it from a backup")
    ledger.unlink()
    ledger.mkdir()  # a directory where the file should be
    one_sentence(run(path), Exit.LEDGER, str(ledger), "cannot be opened")
    nothing_published(watcher)
