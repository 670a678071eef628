"""How long moves take: the machine limits the look-ahead planner in `_core.c` works with.

The planner there gives every move a trapezoidal speed profile, as firmwares plan them: blocks go in
one at a time; when its buffer is full the oldest are fixed (their neighbours far enough ahead are
known) and their time is added up. Junction speeds follow classic per-axis jerk (Marlin 1.x, and what
PrusaSlicer's estimator models) or junction deviation (Marlin 2 with JD), per machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ._core import trapezoid_time

__all__ = ["AXES", "Limits", "trapezoid_time"]

AXES = ("X", "Y", "Z", "E")


@dataclass
class Limits:
    """Machine limits in mm and seconds; in-file M201/M203/M204/M205 change them as the firmware would."""

    max_feedrate: dict[str, float] = field(
        default_factory=lambda: {"X": 500.0, "Y": 500.0, "Z": 12.0, "E": 120.0}
    )
    max_accel: dict[str, float] = field(
        default_factory=lambda: {"X": 3000.0, "Y": 3000.0, "Z": 100.0, "E": 10000.0}
    )
    jerk: dict[str, float] = field(default_factory=lambda: {"X": 10.0, "Y": 10.0, "Z": 0.4, "E": 5.0})
    accel: float = 1500.0  # printing moves (M204 P / S)
    retract_accel: float = 1500.0  # E-only moves (M204 R)
    travel_accel: float = 1500.0  # moves without extrusion (M204 T / S)
    max_accel_extruding: float = 0.0  # caps M204 P when the machine config says so (0: no cap)
    max_accel_travel: float = 0.0
    min_feedrate: float = 0.0  # M205 S
    min_travel_feedrate: float = 0.0  # M205 T
    junction_deviation: float = 0.0  # mm; 0 means classic jerk

    def copy(self) -> Limits:
        """A copy whose per-axis tables can be changed without touching this one."""
        return replace(
            self, max_feedrate=dict(self.max_feedrate), max_accel=dict(self.max_accel), jerk=dict(self.jerk)
        )

    def as_tuple(self) -> tuple:
        """The limits in the order `Core.set_limits` takes them: the per-axis tables (X Y Z E), then the
        scalars in field order."""
        scalars = tuple(getattr(self, f.name) for f in fields(self)[3:])
        return (
            *(tuple(table[a] for a in AXES) for table in (self.max_feedrate, self.max_accel, self.jerk)),
            *scalars,
        )
