"""Analysis benchmark: full analysis vs plain line iteration vs pygcode, same files, same run; memory.

    python bench/analysis.py [--quick]

pygcode (GPLv3) is only a yardstick here; it is measured if it is installed (`pip install pygcode`).
Prints tables; always exits 0.
"""

from __future__ import annotations

import argparse
import os
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
        "| file | lines | plain iteration | afn-agent full analysis | pygcode parse only | pygcode errors |"
    )
    print("|---|---|---|---|---|---|")
    total = {"plain": [0, 0.0], "full": [0, 0.0], "pygcode": [0, 0.0]}
    for name in FILES[:2] if args.quick else FILES:
        path = CORPUS / name
        t_plain, lines = rate(plain, path, 3)
        t_full, _ = rate(analyze_file, path, 1 if args.quick else 3)
        row = [name, lines, f"{lines / t_plain:,.0f}", f"{lines / t_full:,.0f}"]
        total["plain"][0] += lines
        total["plain"][1] += t_plain
        total["full"][0] += lines
        total["full"][1] += t_full
        if have_pygcode:
            t_py, (_, bad) = rate(pygcode_run, path, 1)
            row += [f"{lines / t_py:,.0f}", bad]
            total["pygcode"][0] += lines
            total["pygcode"][1] += t_py
        else:
            row += ["not installed", ""]
        print("| " + " | ".join(str(x) for x in row) + " |")
    full = total["full"][0] / total["full"][1]
    print(
        f"\nall files: full analysis {full:,.0f} lines/s, plain iteration "
        f"{total['plain'][0] / total['plain'][1]:,.0f} lines/s"
        + (f", pygcode {total['pygcode'][0] / total['pygcode'][1]:,.0f} lines/s" if have_pygcode else "")
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
