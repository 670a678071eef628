"""How long moves take: the machine limits the look-ahead planner in `_core.c` works with.

The planner there gives every move a trapezoidal speed profile, as firmwares plan them: blocks go in
one at a time; when its buffer is full the oldest are fixed (their neighbours far enough ahead are
known) and their time is added up. Junction speeds follow classic per-axis jerk (Marlin 1.x, and what
PrusaSlicer's estimator models) or junction deviation (Marlin 2 with JD), per machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from ._core import DEFAULT_LIMITS, trapezoid_time

__all__ = ["AXES", "Limits", "trapezoid_time"]

AXES = ("X", "Y", "Z", "E")


def _axes(name: Literal["max_feedrate", "max_accel", "jerk"]) -> dict[str, float]:
    return dict(zip(AXES, DEFAULT_LIMITS[name], strict=True))


@dataclass
class Limits:
    """Machine limits in mm and seconds; in-file M201/M203/M204/M205 change them as the firmware would.
    The defaults are the compiled core's (`_core.DEFAULT_LIMITS`), defined once there."""

    max_feedrate: dict[str, float] = field(default_factory=lambda: _axes("max_feedrate"))
    max_accel: dict[str, float] = field(default_factory=lambda: _axes("max_accel"))
    jerk: dict[str, float] = field(default_factory=lambda: _axes("jerk"))
    accel: float = DEFAULT_LIMITS["accel"]  # printing moves (M204 P / S)
    retract_accel: float = DEFAULT_LIMITS["accel"]  # E-only moves (M204 R)
    travel_accel: float = DEFAULT_LIMITS["accel"]  # moves without extrusion (M204 T / S)
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
