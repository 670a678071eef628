"""Filament accuracy against the producers' own figures, per corpus file (writes docs/accuracy.md's table).

python bench/accuracy.py                   # filament and time against the producers' own figures
python bench/accuracy.py --real-firmware   # and time against real Marlin 2.1.2 and GRBL 1.1h (minutes)
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afn_agent.gcode.analyzer import analyze_file  # noqa: E402
from afn_agent.gcode.producer import CONVENTIONS, stated_time  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
OWN_FIGURE = {"slic3r-1.2.9_reprap.gcode": (1482.1, "the file's own footer (see below)")}


def main() -> int:
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    print("| file | producer | stated mm | ours mm | error | stated g | ours g | all extruded mm | E mode |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    families = {}
    for r in rows:
        if r["machine_kind"] != "printer":
            continue
        a = analyze_file(CORPUS / r["file"])
        families[a.producer] = CONVENTIONS[a.producer]
        stated = OWN_FIGURE.get(
            r["file"], (float(r["stated_filament_mm"]) if r["stated_filament_mm"] else None, "")
        )
        if stated[0] is None:
            err = "(none stated)"
        else:
            e = (a.producer_count_mm / stated[0] - 1) * 100
            worst = max(worst, abs(e))
            err = f"{e:+.3f}%"
        mode = "relative, inferred" if a.relative_e_inferred else r["extrusion_mode"]
        print(
            f"| {r['file']} | {r['producer']} | {stated[0] if stated[0] is not None else ''} | "
            f"{a.producer_count_mm:.2f} | {err} | {r['stated_filament_g']} | {a.producer_count_g:.3f} | "
            f"{a.material_mm:.2f} | {mode} |"
        )
    print(f"\nworst |error| over the files that state a figure: {worst:.3f}% (target <= 0.1%)\n")
    print("| producer | how it counts (as measured on these files) |")
    print("|---|---|")
    for conv in families.values():
        print(f"| {conv.family} | {conv.note} |")
    times(rows)
    if "--real-firmware" in sys.argv:
        from realfw_time import table

        print("\n## Time on the real firmware\n")
        print("The opening of each file (heating, homing and tool changes left out) run on the real")
        print("firmware; the analyzer estimates the same lines with the shipped profiles.\n")
        print("\n".join(table(CORPUS)))
    return 0


def times(rows: list[dict]) -> None:
    """Our moving + dwell time against the producer's estimate (heating is not in slicers' figures)."""
    print("\n## Time\n")
    print("Ours = moving + dwell (heating waits and homing are reported apart: slicers leave them out).\n")
    print("| file | producer | stated s | ours s | error |")
    print("|---|---|---|---|---|")
    prusa_errors, other = [], []
    sliced = sorted((ROOT / "tests" / "data" / "sliced").glob("*.gcode"))
    entries = [(CORPUS / r["file"], r["producer"], r["stated_time_s"]) for r in rows if r["stated_time_s"]]
    entries += [(p, "PrusaSlicer 2.5.0 (Debian, sliced here)", None) for p in sliced]
    for path, producer, stated in entries:
        estimate = float(stated) if stated else stated_time(path)
        a = analyze_file(path)
        ours = a.moving_s + a.dwell_s
        err = (ours / estimate - 1) * 100
        (prusa_errors if "PrusaSlicer" in producer or "SuperSlicer" in producer else other).append(
            (producer, abs(err))
        )
        print(f"| {path.name} | {producer} | {estimate:.0f} | {ours:.0f} | {err:+.2f}% |")
    errs = sorted(e for _, e in prusa_errors)
    print(
        f"\nPrusaSlicer and SuperSlicer files ({len(errs)}): median |error| {statistics.median(errs):.2f}%, "
        f"worst {max(errs):.2f}% (targets: median <= 3%, worst <= 8%)"
    )
    for producer, e in other:
        print(f"- against {producer}: {e:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
