"""How long moves take: a look-ahead planner with trapezoidal speed profiles, as firmwares plan them.

Blocks go in one at a time; when the buffer is full the oldest are fixed (their neighbours far enough
ahead are known) and their time is added up. Junction speeds follow classic per-axis jerk (Marlin 1.x,
and what PrusaSlicer's estimator models) or junction deviation (Marlin 2 with JD), per machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

AXES = ("X", "Y", "Z", "E")
QUEUE = 64  # blocks of look-ahead kept when fixing older ones
REFRESH = 4 * QUEUE  # buffer size that triggers fixing


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
        return Limits(
            dict(self.max_feedrate),
            dict(self.max_accel),
            dict(self.jerk),
            self.accel,
            self.retract_accel,
            self.travel_accel,
            self.max_accel_extruding,
            self.max_accel_travel,
            self.min_feedrate,
            self.min_travel_feedrate,
            self.junction_deviation,
        )


class _Block:
    __slots__ = ("accel", "cruise", "distance", "entry", "kind", "max_entry", "nominal_length", "safe", "tag")

    def __init__(self, distance: float, cruise: float, accel: float, kind: int, tag: int) -> None:
        self.distance, self.cruise, self.accel, self.kind, self.tag = distance, cruise, accel, kind, tag
        self.entry = self.max_entry = self.safe = 0.0
        self.nominal_length = False


PRINT, TRAVEL, RETRACT = 0, 1, 2


def _allowable(accel: float, target: float, distance: float) -> float:
    """Highest speed from which `target` is reachable over `distance` at `accel`."""
    return math.sqrt(target * target + 2.0 * accel * distance)


def trapezoid_time(distance: float, entry: float, cruise: float, exit_: float, accel: float) -> float:
    """Seconds to cover `distance` starting at `entry`, never above `cruise`, ending at `exit_`."""
    if distance <= 0.0:
        return 0.0
    if accel <= 0.0:
        return distance / max(cruise, 1e-9)
    d_acc = max((cruise * cruise - entry * entry) / (2.0 * accel), 0.0)
    d_dec = max((cruise * cruise - exit_ * exit_) / (2.0 * accel), 0.0)
    if d_acc + d_dec <= distance:
        return (cruise - entry) / accel + (cruise - exit_) / accel + (distance - d_acc - d_dec) / cruise
    # no cruise: the peak speed where acceleration meets deceleration
    peak = math.sqrt(max((2.0 * accel * distance + entry * entry + exit_ * exit_) / 2.0, 0.0))
    peak = max(peak, entry, exit_)
    return max((peak - entry) / accel + (peak - exit_) / accel, 0.0)


class Planner:
    """Moves in, seconds out; `time_by_kind` splits printing, travel and retraction time."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.blocks: list[_Block] = []
        self.time_by_kind = [0.0, 0.0, 0.0]
        self.time_by_tag: dict[int, float] = {}
        self._prev_axis = (0.0, 0.0, 0.0, 0.0)
        self._prev_cruise = 0.0
        self._prev_safe = 0.0
        self._prev_unit = (0.0, 0.0, 0.0)

    @property
    def seconds(self) -> float:
        return sum(self.time_by_kind)

    def move(self, dx: float, dy: float, dz: float, de: float, feed: float, tag: int = 0) -> float:
        """Plan one straight move at `feed` mm/s; returns its length (0 for nothing to do).

        `tag` (bit flags of the caller's, e.g. beam on) sorts the move's time into `time_by_tag`.
        """
        lim = self.limits
        xyz = math.sqrt(dx * dx + dy * dy + dz * dz)
        distance = xyz if xyz > 1e-9 else abs(de)
        if distance <= 1e-9:
            return 0.0
        kind = PRINT if (de > 0 and xyz > 1e-9) else (RETRACT if xyz <= 1e-9 else TRAVEL)
        feed = max(feed, lim.min_travel_feedrate if kind == TRAVEL else lim.min_feedrate)
        inv = 1.0 / distance
        deltas = (dx, dy, dz, de)
        factor = 1.0
        for axis, d in zip(AXES, deltas, strict=True):
            v = abs(d) * inv * feed
            if v > lim.max_feedrate[axis] > 0:
                factor = min(factor, lim.max_feedrate[axis] / v)
        cruise = max(feed * factor, 1e-3)
        axis_v = tuple(d * inv * cruise for d in deltas)
        accel = lim.travel_accel if kind == TRAVEL else (lim.retract_accel if kind == RETRACT else lim.accel)
        for axis, d in zip(AXES, deltas, strict=True):
            if d and lim.max_accel[axis] > 0 and accel * abs(d) * inv > lim.max_accel[axis]:
                accel = lim.max_accel[axis] / (abs(d) * inv)
        block = _Block(distance, cruise, accel, kind, tag)
        if lim.junction_deviation > 0:
            self._junction_deviation(block, (dx * inv, dy * inv, dz * inv) if xyz > 1e-9 else None)
        else:
            self._junction_jerk(block, axis_v)
        self._prev_axis, self._prev_cruise = axis_v, cruise
        self.blocks.append(block)
        if len(self.blocks) >= REFRESH:
            self._fix(len(self.blocks) - QUEUE)
        return distance

    def _junction_jerk(self, block: _Block, axis_v: tuple[float, ...]) -> None:
        """Marlin 1.x: the speed both segments can share at their joint without exceeding any axis jerk."""
        jerk = self.limits.jerk
        safe = block.cruise
        for axis, v in zip(AXES, axis_v, strict=True):
            if abs(v) > jerk[axis]:
                safe = min(safe, jerk[axis])
        vmax = safe
        prev_cruise = self._prev_cruise
        if self.blocks and prev_cruise > 1e-4:
            prev_larger = prev_cruise > block.cruise
            smaller = block.cruise / prev_cruise if prev_larger else prev_cruise / block.cruise
            vmax = block.cruise if prev_larger else prev_cruise
            v_factor, limited = 1.0, False
            for axis, v_exit, v_entry in zip(AXES, self._prev_axis, axis_v, strict=True):
                if prev_larger:
                    v_exit *= smaller
                if limited:
                    v_exit *= v_factor
                    v_entry *= v_factor
                if v_exit > v_entry:
                    j = (v_exit - v_entry) if (v_entry > 0 or v_exit < 0) else max(v_exit, -v_entry)
                else:
                    j = (v_entry - v_exit) if (v_entry < 0 or v_exit > 0) else max(-v_exit, v_entry)
                if j > jerk[axis]:
                    v_factor *= jerk[axis] / j
                    limited = True
            if limited:
                vmax *= v_factor
            threshold = vmax * 0.99
            if self._prev_safe > threshold and safe > threshold:
                vmax = safe  # not coasting: both ends could stop within jerk anyway
        self._prev_safe = safe
        self._set_entry(block, vmax, safe)

    def _junction_deviation(self, block: _Block, unit: tuple[float, float, float] | None) -> None:
        """Marlin 2 JD: the corner speed a circle of the allowed deviation could take at this angle."""
        jd = self.limits.junction_deviation
        vmax = 0.0
        if unit is not None and self.blocks and self._prev_cruise > 1e-4:
            px, py, pz = self._prev_unit
            cos_theta = -(px * unit[0] + py * unit[1] + pz * unit[2])
            if cos_theta < 0.999999:
                cos_theta = max(cos_theta, -0.999999)
                sin_half = math.sqrt(0.5 * (1.0 - cos_theta))
                vmax = math.sqrt(block.accel * jd * sin_half / (1.0 - sin_half))
            vmax = min(vmax, block.cruise, self._prev_cruise)
        if unit is not None:
            self._prev_unit = unit
        self._prev_safe = 0.0
        self._set_entry(block, vmax, min(block.cruise, self.limits.jerk["X"]) if vmax == 0 else vmax)

    def _set_entry(self, block: _Block, vmax: float, safe: float) -> None:
        allowable = _allowable(block.accel, safe, block.distance)
        block.safe = safe
        block.max_entry = vmax
        block.entry = min(vmax, allowable)
        block.nominal_length = block.cruise <= allowable

    def _fix(self, count: int) -> None:
        """Settle speeds over the whole buffer, then add up the time of its first `count` blocks."""
        blocks = self.blocks
        # reverse pass: each block must be able to slow down to the next one's entry
        nxt = None
        for b in reversed(blocks):
            if nxt is not None and b.entry != b.max_entry:
                if not b.nominal_length and b.max_entry > nxt.entry:
                    b.entry = min(b.max_entry, _allowable(b.accel, nxt.entry, b.distance))
                else:
                    b.entry = b.max_entry
            nxt = b
        # forward pass: and to speed up from the previous one's entry
        prev = None
        for b in blocks:
            if prev is not None and not prev.nominal_length and prev.entry < b.entry:
                reachable = _allowable(prev.accel, prev.entry, prev.distance)
                if reachable < b.entry:
                    b.entry = reachable
            prev = b
        times, tags = self.time_by_kind, self.time_by_tag
        for i in range(count):
            b = blocks[i]
            exit_ = blocks[i + 1].entry if i + 1 < len(blocks) else b.safe
            t = trapezoid_time(b.distance, b.entry, b.cruise, exit_, b.accel)
            times[b.kind] += t
            if b.tag:
                tags[b.tag] = tags.get(b.tag, 0.0) + t
        del blocks[:count]

    def flush(self) -> None:
        """End of job (or a dwell, a wait): every planned move runs to a stop."""
        if self.blocks:
            self._fix(len(self.blocks))
        self._prev_cruise = 0.0
        self._prev_safe = 0.0
