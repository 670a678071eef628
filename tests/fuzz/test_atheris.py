"""Run the atheris harness for a bounded number of inputs, where atheris is installed."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (pip install -e '.[fuzz]') has no wheel on every platform")


def test_analyzer_survives_coverage_guided_fuzzing(tmp_path):
    corpus = tmp_path / "seeds"
    corpus.mkdir()
    for i, seed in enumerate([b"G1 X1 E1\nG2 X0 Y0 I1\n", b"M83\nG1 E-1\nM221 S90\n", b"$H\nS90\nX10 Y5\n"]):
        (corpus / f"seed{i}").write_bytes(seed)
    harness = Path(__file__).with_name("fuzz_analyzer.py")
    p = subprocess.run(
        [
            sys.executable,
            str(harness),
            "-runs=20000",
            "-max_len=512",
            "-timeout=5",
            "-max_total_time=180",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done " in p.stderr
