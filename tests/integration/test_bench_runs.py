"""The benchmark itself must keep running (its figures are read by people, not asserted here)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "streaming.py"


def test_streaming_bench_quick_run_prints_its_tables():
    p = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for heading in ("## Throughput", "## Urgent bytes", "## Peak memory"):
        assert heading in p.stdout
    assert "NO" not in [cell.strip() for line in p.stdout.splitlines() for cell in line.split("|")]
