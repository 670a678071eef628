"""Issue 15, class 13: config values that ended in tracebacks, or in an agent that started and quietly
did nothing. Each is refused by `check-config` and by `run` with a sentence naming the file and key."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import api_table, write_config

MACHINE = {
    "id": "printer-1",
    "class": "fdm-printer",
    "profile": "marlin2",
    "port": "/dev/null",
    "tariff": "printer",
}


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "afn_agent", *args], capture_output=True, text=True, timeout=timeout
    )


def config(tmp_path, machine=None, extra: str = "", broker=None):
    return write_config(tmp_path / "agent.toml", [{**MACHINE, **(machine or {})}], broker=broker), extra


@pytest.mark.parametrize(
    ("machine", "extra", "broker", "says"),
    [
        (
            {},
            api_table().replace('role = "slicer"\n', 'role = "slicer"\nmachines = [1]\n', 1),
            None,
            "api.keys[0].machines[0]: expected a string (in quotes), got 1",
        ),
        (
            {"interlock": "gpio:nochip"},
            "",
            None,
            "machines[0] (printer-1).interlock: gpio:<chip>:<line>",
        ),
        ({"interlock": "gpio:gpiochip77:3"}, "", None, "interlock: no GPIO chip /dev/gpiochip77"),
        ({"reader": "uart:/dev/ttyUSB9@fast"}, "", None, "machines[0] (printer-1).reader: evdev:<device>"),
        ({"reader": "uart:/dev/ttyUSB9@9600"}, "", None, "reader: /dev/ttyUSB9 does not exist"),
        ({"port": "/dev/ttyACM77"}, "", None, "port: /dev/ttyACM77 does not exist"),
        (
            {},
            "",
            {"host": "127.0.0.1", "tls": True, "ca_file": "/etc/afn-agent/absent-ca.crt"},
            "[broker].ca_file: /etc/afn-agent/absent-ca.crt does not exist",
        ),
        (
            {},
            api_table().replace('host = "127.0.0.1"', 'host = "no-such-host.invalid"'),
            None,
            "[api].host: 'no-such-host.invalid' does not resolve",
        ),
    ],
)
def test_check_config_and_run_refuse_with_the_key_named(tmp_path, machine, extra, broker, says):
    path, extra = config(tmp_path, machine, extra, broker)
    path.write_text(path.read_text() + extra)
    for args in (("check-config", str(path)), ("run", "--config", str(path))):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert says in done.stderr and str(path) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_latin1_file_and_an_uncreatable_data_dir(tmp_path):
    path, _ = config(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'site = "fablab"', b'site = "fablab" # atelier \xe9quip\xe9'))
    done = cli("check-config", str(path))
    assert done.returncode == 2 and "line 2: byte 0xe9 is not UTF-8" in done.stderr, done.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    path, _ = config(tmp_path)
    path.write_text(
        path.read_text().replace(f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{blocker}/data"')
    )
    done = cli("check-config", str(path))
    assert done.returncode == 2 and "[agent].data_dir" in done.stderr and "Traceback" not in done.stderr


def test_run_waits_for_a_missing_port_only_when_told(tmp_path):
    path, _ = config(tmp_path, {"port": str(tmp_path / "later.tty")})
    assert cli("run", "--config", str(path)).returncode == 2
    proc = subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--wait-for-ports", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(3)  # real time: an agent that gave up on the missing port would have exited
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_machine_marked_wait_for_port_does_not_stop_the_agent(tmp_path):
    path, _ = config(tmp_path, {"port": str(tmp_path / "later.tty"), "wait_for_port": True})
    done = cli("check-config", str(path))
    assert done.returncode == 0, done.stderr
