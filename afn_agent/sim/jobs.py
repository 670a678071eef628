"""Synthetic jobs for tests, the demo and benchmarks: the short segments that starve naive hosts."""

from __future__ import annotations

import math
from pathlib import Path


def circle_gcode(
    path: str | Path,
    segments: int = 5000,
    segment_mm: float = 0.1,
    *,
    flavour: str = "marlin",
    feed: float = 3000.0,
    extrude: bool = True,
    heat: tuple[float, float] | None = None,
    centre: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """A circle of `segments` chords of `segment_mm`, as a slicer would write a curved perimeter;
    with `heat` (hot end, bed °C) a printer job first heats and waits, as sliced jobs do."""
    radius = segment_mm / (2 * math.sin(math.pi / segments))
    path = Path(path)
    with open(path, "w", encoding="ascii") as f:
        if flavour == "marlin":
            f.write("; afn-agent test circle\nG21\nG90\nM83\nG92 E0\n")
            if heat:
                f.write(f"M104 S{heat[0]:g}\nM140 S{heat[1]:g}\nM190 S{heat[1]:g}\nM109 S{heat[0]:g}\n")
        else:
            f.write("(afn-agent test circle)\nG21\nG90\nG94\n")
        cx, cy = centre
        f.write(f"G0 X{cx + radius:.3f} Y{cy:.3f} F{feed:.0f}\n")
        if flavour == "laser":
            f.write("M4 S0\n")
        e = segment_mm * 0.0333
        for i in range(1, segments + 1):
            a = 2 * math.pi * i / segments
            x, y = cx + radius * math.cos(a), cy + radius * math.sin(a)
            if flavour == "marlin":
                tail = f" E{e:.5f}" if extrude else ""
                f.write(f"G1 X{x:.3f} Y{y:.3f}{tail}\n")
            elif flavour == "laser":
                f.write(f"G1 X{x:.3f} Y{y:.3f} S800 F{feed:.0f}\n")
            else:
                f.write(f"G1 X{x:.3f} Y{y:.3f} F{feed:.0f}\n")
        f.write("M5\n" if flavour != "marlin" else "M107\n")
    return path
