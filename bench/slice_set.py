"""Slice a varied set of shapes with Debian's prusa-slicer, for the time-accuracy comparison.

    apt-get install prusa-slicer && python bench/slice_set.py [OUTDIR]

Writes STL shapes made here (no downloads) and one G-code file per setting combination into OUTDIR
(default tests/data/sliced/), each carrying PrusaSlicer's own "estimated printing time (normal mode)".
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

OUT = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else Path(__file__).resolve().parents[1] / "tests" / "data" / "sliced"
)


def _facet(f, a, b, c) -> None:
    f.write("facet normal 0 0 0\n outer loop\n")
    for v in (a, b, c):
        f.write(f"  vertex {v[0]:.4f} {v[1]:.4f} {v[2]:.4f}\n")
    f.write(" endloop\nendfacet\n")


def prism(path: Path, n: int, r: float, h: float, r_top: float | None = None, star: float = 1.0) -> Path:
    """An n-sided prism or frustum (a star when `star` < 1: every other vertex pulled in)."""
    r_top = r if r_top is None else r_top

    def ring(radius: float, z: float, i: int):
        a = 2 * math.pi * i / n
        k = star if i % 2 else 1.0
        return (radius * k * math.cos(a), radius * k * math.sin(a), z)

    with open(path, "w") as f:
        f.write("solid s\n")
        for i in range(n):
            b0, b1 = ring(r, 0, i), ring(r, 0, i + 1)
            t0, t1 = ring(r_top, h, i), ring(r_top, h, i + 1)
            _facet(f, (0, 0, 0), b1, b0)
            _facet(f, (0, 0, h), t0, t1)
            _facet(f, b0, b1, t1)
            _facet(f, b0, t1, t0)
        f.write("endsolid s\n")
    return path


def sphere(path: Path, r: float, n: int = 32) -> Path:
    with open(path, "w") as f:
        f.write("solid s\n")
        for i in range(n // 2):
            p0, p1 = math.pi * i / (n // 2), math.pi * (i + 1) / (n // 2)
            for j in range(n):
                a0, a1 = 2 * math.pi * j / n, 2 * math.pi * (j + 1) / n

                def v(p, a):
                    return (r * math.sin(p) * math.cos(a), r * math.sin(p) * math.sin(a), r - r * math.cos(p))

                _facet(f, v(p0, a0), v(p1, a0), v(p1, a1))
                _facet(f, v(p0, a0), v(p1, a1), v(p0, a1))
        f.write("endsolid s\n")
    return path


SHAPES = {
    "cylinder": lambda p: prism(p, 96, 15, 12),
    "cube": lambda p: prism(p, 4, 18, 15),
    "cone": lambda p: prism(p, 64, 20, 25, r_top=4),
    "hexagon": lambda p: prism(p, 6, 20, 6),
    "star": lambda p: prism(p, 20, 22, 8, star=0.55),
    "tower": lambda p: prism(p, 32, 5, 40),
    "plate": lambda p: prism(p, 4, 40, 1.2),
    "sphere": lambda p: sphere(p, 12),
}

BASE = ["--gcode-flavor", "marlin2", "--machine-limits-usage", "emit_to_gcode", "--skirts", "1"]
RUNS = [
    ("cylinder", ["--layer-height", "0.2", "--fill-density", "20%"]),
    ("cylinder", ["--layer-height", "0.1", "--perimeters", "3", "--fill-pattern", "gyroid"]),
    ("cube", ["--layer-height", "0.3", "--fill-density", "10%", "--fill-pattern", "grid"]),
    ("cube", ["--fill-density", "100%", "--fill-pattern", "rectilinear", "--perimeter-speed", "30"]),
    ("cone", ["--layer-height", "0.15", "--perimeters", "2", "--travel-speed", "250"]),
    (
        "cone",
        [
            "--machine-max-acceleration-extruding",
            "500",
            "--machine-max-acceleration-x",
            "800",
            "--machine-max-acceleration-y",
            "800",
        ],
    ),
    ("hexagon", ["--fill-pattern", "honeycomb", "--fill-density", "35%"]),
    ("hexagon", ["--machine-max-jerk-x", "20", "--machine-max-jerk-y", "20", "--infill-speed", "150"]),
    ("star", ["--perimeters", "4", "--external-perimeter-speed", "20"]),
    ("star", ["--layer-height", "0.25", "--fill-pattern", "rectilinear", "--solid-infill-speed", "100"]),
    ("tower", ["--layer-height", "0.2", "--cooling", "--slowdown-below-layer-time", "15"]),
    ("tower", ["--layer-height", "0.1", "--fill-density", "0%", "--perimeters", "1"]),
    ("plate", ["--fill-density", "100%", "--fill-pattern", "rectilinear", "--first-layer-speed", "15"]),
    (
        "plate",
        [
            "--layer-height",
            "0.3",
            "--infill-speed",
            "200",
            "--machine-max-acceleration-extruding",
            "3000",
            "--machine-max-acceleration-x",
            "5000",
            "--machine-max-acceleration-y",
            "5000",
        ],
    ),
    ("sphere", ["--layer-height", "0.2", "--fill-density", "15%", "--support-material"]),
    ("sphere", ["--layer-height", "0.12", "--fill-pattern", "gyroid", "--filament-density", "1.27"]),
    (
        "cylinder",
        [
            "--brim-width",
            "5",
            "--filament-diameter",
            "2.85",
            "--nozzle-diameter",
            "0.6",
            "--layer-height",
            "0.3",
        ],
    ),
    (
        "cube",
        [
            "--perimeter-acceleration",
            "800",
            "--infill-acceleration",
            "2000",
            "--default-acceleration",
            "1000",
            "--travel-speed",
            "200",
        ],
    ),
    ("cone", ["--gcode-flavor", "marlin", "--layer-height", "0.2"]),
    (
        "tower",
        ["--machine-max-feedrate-x", "100", "--machine-max-feedrate-y", "100", "--travel-speed", "300"],
    ),
    ("star", ["--filament-density", "1.04", "--fill-density", "50%", "--fill-pattern", "cubic"]),
    ("plate", ["--retract-length", "4", "--retract-speed", "25", "--retract-before-travel", "1"]),
    ("hexagon", ["--spiral-vase", "--perimeters", "1", "--top-solid-layers", "0", "--fill-density", "0%"]),
    ("sphere", ["--machine-max-jerk-x", "4", "--machine-max-jerk-y", "4", "--perimeter-speed", "80"]),
]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    stl_dir = OUT / "stl"
    stl_dir.mkdir(exist_ok=True)
    for name, make in SHAPES.items():
        make(stl_dir / f"{name}.stl")
    for i, (shape, opts) in enumerate(RUNS, 1):
        out = OUT / f"{i:02d}_{shape}.gcode"
        cmd = [
            "prusa-slicer",
            "--export-gcode",
            *BASE,
            *opts,
            "--output",
            str(out),
            str(stl_dir / f"{shape}.stl"),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{out.name}: prusa-slicer failed: {p.stderr[-300:]}", file=sys.stderr)
            continue
        print(f"{out.name}: {' '.join(opts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
