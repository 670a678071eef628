"""Analysis benchmark: full analysis vs plain line iteration vs pygcode, same files, same run; memory.

    python bench/analysis.py [--quick] [--octoprint PYTHON]

pygcode (GPLv3) is only a yardstick here; it is measured if it is installed (`pip install pygcode`).
OctoPrint's own analyzer (`octoprint.util.gcodeInterpreter`, what it runs on every upload) is measured
when `--octoprint` names a Python that has OctoPrint installed, e.g. a throwaway venv:
`python3 -m venv /tmp/op && /tmp/op/bin/pip install octoprint`. It runs in that interpreter, on the same
files, in the same run. Prints tables; always exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afn_agent.gcode.analyzer import analyze_file  # noqa: E402
from bench.common import fill_file, run_measured  # noqa: E402

FILES = [
    "prusaslicer-2.6.1_benchy.gcode",
    "cura-3.5.0_xyzcube.gcode",
    "ideamaker-4.2.2_benchy.gcode",
    "slic3rpe-1.33.3_arcwelder_benchy.gcode",
    "inkscape-lasertools_trisquel.gcode",
]
CORPUS = ROOT / "tests" / "data" / "corpus"


def plain(path: Path) -> int:
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for _ in f:
            n += 1
    return n


def pygcode_run(path: Path) -> tuple[int, int]:
    """Lines pygcode parsed, and lines it threw on."""
    from pygcode import Line

    ok = bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            try:
                Line(raw)
                ok += 1
            except Exception:  # counting pygcode's failures is the point
                bad += 1
    return ok, bad


OCTOPRINT_RUN = """
import sys, time
from octoprint.util.gcodeInterpreter import gcode
best = float("inf")
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    gcode().load(sys.argv[1])
    best = min(best, time.perf_counter() - t)
print(best)
"""


def octoprint_seconds(python: str, path: Path, repeat: int) -> float | None:
    """Best time of OctoPrint's analyzer on a file, in the interpreter that has it; None if it fails."""
    p = subprocess.run(
        [python, "-c", OCTOPRINT_RUN, str(path), str(repeat)], capture_output=True, text=True, timeout=600
    )
    return float(p.stdout.strip()) if p.returncode == 0 else None


def rate(fn, path: Path, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(path)
        best = min(best, time.perf_counter() - t)
    return best, out


def speed(args) -> None:
    try:
        import pygcode  # noqa: F401

        have_pygcode = True
    except ImportError:
        have_pygcode = False
    print("## Lines per second (best of 3), same files, same run\n")
    print(
        "| file | lines | plain iteration | afn-agent full analysis | OctoPrint analyzer | "
        "pygcode parse only | pygcode errors |"
    )
    print("|---|---|---|---|---|---|---|")
    total = {k: [0, 0.0] for k in ("plain", "full", "octoprint", "pygcode")}
    repeat = 1 if args.quick else 3
    for name in FILES[:2] if args.quick else FILES:
        path = CORPUS / name
        t_plain, lines = rate(plain, path, 3)
        t_full, _ = rate(analyze_file, path, repeat)
        row = [name, lines, f"{lines / t_plain:,.0f}", f"{lines / t_full:,.0f}"]
        for key, t in (("plain", t_plain), ("full", t_full)):
            total[key][0] += lines
            total[key][1] += t
        t_op = octoprint_seconds(args.octoprint, path, repeat) if args.octoprint else None
        row.append(f"{lines / t_op:,.0f}" if t_op else ("failed" if args.octoprint else "not measured"))
        if t_op:
            total["octoprint"][0] += lines
            total["octoprint"][1] += t_op
        if have_pygcode:
            t_py, (_, bad) = rate(pygcode_run, path, 1)
            row += [f"{lines / t_py:,.0f}", bad]
            total["pygcode"][0] += lines
            total["pygcode"][1] += t_py
        else:
            row += ["not installed", ""]
        print("| " + " | ".join(str(x) for x in row) + " |")
    speeds = {k: n / t for k, (n, t) in total.items() if t}
    full = speeds["full"]
    print(
        "\nall files: "
        + ", ".join(f"{k} {v:,.0f} lines/s" for k, v in speeds.items())
        + "".join(
            f"; full analysis / {k} = {full / speeds[k]:.1f}x"
            for k in ("octoprint", "pygcode")
            if k in speeds
        )
    )
    print(f"target >= 400,000 lines/s: {'met' if full >= 400_000 else 'NOT met'}")


def memory(args) -> None:
    """Peak RSS of a process analysing a small and a 100x larger file."""
    sizes = (1, 10) if args.quick else (2, 200)
    body = (CORPUS / "prusaslicer-2.6.1_benchy.gcode").read_bytes()
    work = Path(tempfile.mkdtemp(prefix="afn-bench-"))
    rows = []
    for mb in sizes:
        f = fill_file(work / f"big-{mb}.gcode", body, mb)
        code = (
            f"from afn_agent.gcode.analyzer import analyze_file; a = analyze_file({str(f)!r}); print(a.lines)"
        )
        out, rss = run_measured([sys.executable, "-c", code], cwd=ROOT)
        rows.append((f"{f.stat().st_size / 1e6:.0f} MB", out.strip(), rss))
        f.unlink()
    print("\n## Peak memory of a whole analysis process\n")
    print("| file | lines | peak RSS |\n|---|---|---|")
    for size, lines, rss in rows:
        print(f"| {size} | {lines} | {rss:.1f} MB |")
    print(
        f"\npeak RSS difference: {rows[1][2] - rows[0][2]:+.1f} MB "
        "(flat means the pass keeps no per-line state)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--octoprint", metavar="PYTHON", help="a Python with OctoPrint installed, to time its analyzer"
    )
    args = ap.parse_args()
    print(
        f"# afn-agent analysis benchmark\n\n`python bench/analysis.py{' --quick' if args.quick else ''}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}\n"
    )
    speed(args)
    memory(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
