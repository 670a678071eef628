"""The benchmark itself must keep running (its figures are read by people, not asserted here)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "streaming.py"


@pytest.mark.slow  # 45 s: run with `pytest -m slow` (the streaming figures themselves: docs/bench.md)
def test_streaming_bench_quick_run_prints_its_tables():
    p = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for heading in ("## Throughput", "## Urgent bytes", "## Peak memory"):
        assert heading in p.stdout
    assert "NO" not in [cell.strip() for line in p.stdout.splitlines() for cell in line.split("|")]


def test_mqtt_bench_quick_run_prints_its_table():
    bench = BENCH.parent / "mqtt.py"
    cmd = [sys.executable, str(bench), "--machines", "20", "--seconds", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "status latency p50 / p99" in p.stdout
    unsent = next(line for line in p.stdout.splitlines() if "outbox rows left unsent" in line)
    assert unsent.split()[-1] == "0", "every outbox row reached the broker"


def test_fleet_scale_bench_quick_run_prints_its_table():
    bench = BENCH.parent / "fleet_scale.py"
    cmd = [sys.executable, str(bench), "--machines", "60", "--seconds", "3", "--procs", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in p.stdout.splitlines() if "|" in line}
    assert [c.strip() for c in rows["outbox rows left / records unacknowledged"]] == ["0 / 0", "0 / 0"]
    assert [c.strip() for c in rows["usage records billed / kept by id"]] == ["60 / 60", "60 / 60"]
    assert [c.strip() for c in rows["lab 0's user writing in lab 1's topics"]] == ["refused", "refused"]


def test_least_host_bench_quick_run_streams_every_line_without_error():
    """The floor under bench/cpu.py is only a floor if the bare host streams correctly: no line error,
    resend or dropped byte at the simulator (it exits 1 otherwise)."""
    bench = BENCH.parent / "least_host.py"
    p = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| 250000 |")]
    python_rows = [row for row in rows if "in C" not in row]
    assert len(python_rows) == 5  # watch, whole lines, naps for 1 and 2 answers, 4 machines
    assert len(rows) - len(python_rows) == (5 if shutil.which("cc") or shutil.which("gcc") else 0)
