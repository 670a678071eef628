"""What the machine does over a job, command by command: where it goes, how long it takes, what it heats.

Positions, units and offsets; moves and arcs into the planner; dwell, homing and heating waits; laser
and spindle on-time; bounds of every move and of the moves that make the part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .lexer import Command
from .motion import Limits, Planner

BEAM, SPINDLE = 1, 2  # planner tag bits; the power in percent of full scale sits above them
POWER_SHIFT = 2
MM_PER_ARC_SEGMENT = 1.0
MAX_ARC_SEGMENTS = 4096  # an absurd arc (radius of kilometres) must not stall the analysis
DEFAULT_FEED = 25.0  # mm/s: Marlin's feedrate before any F word (1500 mm/min)
INCH = 25.4


@dataclass
class HeatModel:
    """How fast heaters change (°C/s) and where they start; waits are charged as heating time."""

    hotend_rate: float = 2.0
    bed_rate: float = 0.5
    cool_rate: float = 0.5
    ambient: float = 25.0
    home_s: float = 10.0


@dataclass
class Bounds:
    """Min and max per axis, or nothing seen yet."""

    lo: list[float] = field(default_factory=lambda: [math.inf] * 3)
    hi: list[float] = field(default_factory=lambda: [-math.inf] * 3)

    def add(self, p: tuple[float, float, float]) -> None:
        for i in range(3):
            if p[i] < self.lo[i]:
                self.lo[i] = p[i]
            if p[i] > self.hi[i]:
                self.hi[i] = p[i]

    def as_dict(self) -> dict[str, list[float]] | None:
        if self.lo[0] == math.inf:
            return None
        return {a: [round(self.lo[i], 3), round(self.hi[i], 3)] for i, a in enumerate("XYZ")}


class _Heater:
    def __init__(self, model: HeatModel, rate: float) -> None:
        self.model, self.rate = model, rate
        self.t0, self.temp0, self.target = 0.0, model.ambient, 0.0

    def temp(self, now: float) -> float:
        goal = max(self.target, self.model.ambient)
        dt = now - self.t0
        if self.temp0 < goal:
            return min(goal, self.temp0 + self.rate * dt)
        return max(goal, self.temp0 - self.model.cool_rate * dt)

    def set(self, target: float, now: float) -> None:
        self.temp0, self.t0, self.target = self.temp(now), now, target

    def wait(self, now: float, both_ways: bool) -> float:
        """Seconds until the target is reached (M109 S waits only while heating; R waits both ways)."""
        t = self.temp(now)
        if t < self.target:
            return (self.target - t) / self.rate
        floor = max(self.target, self.model.ambient)  # nothing cools below the room
        if both_ways and t > floor:
            return (t - floor) / self.model.cool_rate
        return 0.0


class Timeline:
    """Feed commands; read `seconds`, the split, the bounds and the beam/spindle time at the end."""

    def __init__(
        self,
        limits: Limits | None = None,
        heat: HeatModel | None = None,
        grbl_dialect: bool = False,
        laser_max_s: float = 1000.0,
    ) -> None:
        self.planner = Planner(limits)
        self.heat = heat or HeatModel()
        self.grbl = grbl_dialect
        self.laser_max_s = laser_max_s
        self.pos = [0.0, 0.0, 0.0]
        self.offset = [0.0, 0.0, 0.0]
        self.relative = False
        self.inches = False
        self.feed = DEFAULT_FEED  # mm/s, until the file sets one
        self.feed_factor = 1.0
        self.motion = "G0"
        self.heating_s = 0.0
        self.dwell_s = 0.0
        self.other_s = 0.0
        self.spindle = 0.0
        self.spindle_mode = ""  # M3, M4 or ''
        self.tools_used: list[int] = []
        self.rapid_mm = 0.0
        self.cut_mm = 0.0
        self.beam_mm = 0.0
        self._spindle_still = 0.0  # dwell while the spindle turns
        self.all_moves = Bounds()
        self.work_moves = Bounds()
        self._heaters = {
            "T": _Heater(self.heat, self.heat.hotend_rate),
            "B": _Heater(self.heat, self.heat.bed_rate),
        }

    # ---- totals -------------------------------------------------------------------------------
    @property
    def moving_s(self) -> float:
        return self.planner.seconds

    @property
    def seconds(self) -> float:
        return self.moving_s + self.dwell_s + self.heating_s + self.other_s

    def beam_s(self) -> float:
        return sum(t for tag, t in self.planner.time_by_tag.items() if tag & BEAM)

    def beam_full_power_s(self) -> float:
        """Beam time weighted by power (S over the profile's full scale): what a laser tube wears by."""
        return sum(
            t * (tag >> POWER_SHIFT) / 100 for tag, t in self.planner.time_by_tag.items() if tag & BEAM
        )

    def spindle_s(self) -> float:
        return sum(t for tag, t in self.planner.time_by_tag.items() if tag & SPINDLE) + self._spindle_still

    def finish(self) -> None:
        self.planner.flush()

    # ---- commands -----------------------------------------------------------------------------
    def feed_command(self, cmd: Command, de: float) -> None:
        """Account one command; `de` is the signed filament move the material counter read from it."""
        codes = (cmd.name, *cmd.also) if cmd.also else (cmd.name,)
        motion = None
        for code in codes:
            if code in ("G0", "G1", "G2", "G3"):
                motion = code
            else:
                self._modal(code, cmd)
        if motion is None and not cmd.name and (set(cmd.params) & {"X", "Y", "Z", "E", "I", "J"}):
            motion = self.motion  # modal words alone move with the last motion command
        if cmd.params.get("F"):
            self.feed = cmd.params["F"] * (INCH if self.inches else 1.0) / 60.0
        power = cmd.params.get("S")
        if power is not None and (motion is not None or not cmd.name):  # `G1 X1 S800`, `S90`
            self.spindle = power
        if motion is not None:
            self.motion = motion
            self._move(motion, cmd, de)

    def _modal(self, code: str, cmd: Command) -> None:
        p = cmd.params
        if code == "G90":
            self.relative = False
        elif code == "G91":
            self.relative = True
        elif code == "G20":
            self.inches = True
        elif code == "G21":
            self.inches = False
        elif code == "G92":
            for i, a in enumerate("XYZ"):
                if p.get(a) is not None:
                    self.offset[i] = self.pos[i] - self._mm(p[a])
            if not p:
                self.offset = [0.0, 0.0, 0.0]
        elif code == "G4":
            self._wait(self._dwell(cmd), "dwell")
        elif code == "G28":
            self._wait(self.heat.home_s, "other")
            for i, a in enumerate("XYZ"):
                if not p or a in p:
                    self.pos[i] = 0.0
        elif code in ("M104", "M109", "M140", "M190"):
            self._temperature(code, cmd)
        elif code in ("M3", "M4"):
            self.spindle_mode = code
            if p.get("S") is not None:
                self.spindle = p["S"]
        elif code == "M5":
            self.spindle_mode = ""
        elif code in ("M201", "M203", "M204", "M205", "M220"):
            self._limits(code, p)
        elif code[:1] == "T" and code[1:].isdigit() and int(code[1:]) not in self.tools_used:
            self.tools_used.append(int(code[1:]))
        elif code == "M6" and p.get("T") is not None and int(p["T"]) not in self.tools_used:
            self.tools_used.append(int(p["T"]))

    def _mm(self, v: float) -> float:
        return v * INCH if self.inches else v

    def _dwell(self, cmd: Command) -> float:
        p, s = cmd.params.get("P"), cmd.params.get("S")
        if s is not None:
            return s
        if p is not None:
            return p if self.grbl else p / 1000.0  # GRBL's G4 P is seconds, RepRap's milliseconds
        return 0.0

    def _wait(self, seconds: float, kind: str) -> None:
        self.planner.flush()
        seconds = max(seconds, 0.0)  # a negative dwell (`G4 P-5`) waits for nothing
        if kind == "dwell":
            self.dwell_s += seconds
            if self.spindle_mode and self.spindle > 0:
                self._spindle_still += seconds
        elif kind == "heating":
            self.heating_s += seconds
        else:
            self.other_s += seconds

    def _temperature(self, code: str, cmd: Command) -> None:
        heater = self._heaters["T" if code in ("M104", "M109") else "B"]
        target = cmd.params.get("S")
        both_ways = False
        if target is None:
            target, both_ways = cmd.params.get("R"), True
        if target is None:
            return
        now = self.seconds
        heater.set(target, now)
        if code in ("M109", "M190"):
            self._wait(heater.wait(now, both_ways), "heating")

    def _limits(self, code: str, p: dict) -> None:
        lim = self.planner.limits
        if code == "M201":
            for a in "XYZE":
                if p.get(a):
                    lim.max_accel[a] = p[a]
        elif code == "M203":
            for a in "XYZE":
                if p.get(a):
                    lim.max_feedrate[a] = p[a]
        elif code == "M204":
            if p.get("S") is not None:  # legacy form: one acceleration for printing and travel
                lim.accel = _capped(p["S"], lim.max_accel_extruding)
                lim.travel_accel = _capped(p["S"], lim.max_accel_travel)
                if p.get("T") is not None:
                    lim.retract_accel = p["T"]
            else:
                if p.get("P") is not None:
                    lim.accel = _capped(p["P"], lim.max_accel_extruding)
                if p.get("R") is not None:
                    lim.retract_accel = p["R"]
                if p.get("T") is not None:
                    lim.travel_accel = _capped(p["T"], lim.max_accel_travel)
        elif code == "M205":
            for a in "XYZE":
                if p.get(a) is not None:
                    lim.jerk[a] = p[a]
            if p.get("S") is not None:
                lim.min_feedrate = p["S"]
            if p.get("T") is not None:
                lim.min_travel_feedrate = p["T"]
            if p.get("J") is not None:
                lim.junction_deviation = p["J"]
        elif code == "M220" and p.get("S"):
            self.feed_factor = p["S"] / 100.0

    # ---- moves --------------------------------------------------------------------------------
    def _target(self, p: dict) -> list[float]:
        t = list(self.pos)
        for i, a in enumerate("XYZ"):
            v = p.get(a)
            if v is not None:
                v = self._mm(v)
                t[i] = t[i] + v if self.relative else v + self.offset[i]
        return t

    def _move(self, motion: str, cmd: Command, de: float) -> None:
        target = self._target(cmd.params)
        feed = self.feed * self.feed_factor
        if motion == "G0":
            feed = max(self.planner.limits.max_feedrate.values()) if self.grbl or feed <= 0 else feed
        laser_on = self.spindle_mode and self.spindle > 0 and motion != "G0"
        tag = (BEAM if laser_on else 0) | (SPINDLE if self.spindle_mode and self.spindle > 0 else 0)
        if laser_on:
            tag |= min(round(100 * self.spindle / self.laser_max_s), 100) << POWER_SHIFT
        if motion in ("G2", "G3"):
            length = self._arc(motion, cmd, target, de, feed, tag)
        else:
            d = [target[i] - self.pos[i] for i in range(3)]
            length = self.planner.move(d[0], d[1], d[2], de, feed, tag)
            self.pos = target
        self.all_moves.add(tuple(self.pos))
        working = de > 0 or (motion != "G0" and self.spindle_mode and self.spindle > 0)
        if motion == "G0":
            self.rapid_mm += length
        else:
            self.cut_mm += length
            if laser_on:
                self.beam_mm += length
        if working:
            self.work_moves.add(tuple(self.pos))

    def _arc(self, motion: str, cmd: Command, target: list[float], de: float, feed: float, tag: int) -> float:
        """Split an arc into chords of about 1 mm, as Marlin and the slicers' estimators do."""
        p = cmd.params
        x0, y0 = self.pos[0], self.pos[1]
        x1, y1 = target[0], target[1]
        if p.get("R") is not None:
            cx, cy = _center_from_radius(x0, y0, x1, y1, self._mm(p["R"]), motion == "G2")
        else:
            cx, cy = x0 + self._mm(p.get("I") or 0.0), y0 + self._mm(p.get("J") or 0.0)
        r = math.hypot(x0 - cx, y0 - cy)
        a0 = math.atan2(y0 - cy, x0 - cx)
        a1 = math.atan2(y1 - cy, x1 - cx)
        sweep = a1 - a0
        if motion == "G2" and sweep >= -1e-9:
            sweep -= 2 * math.pi
        elif motion == "G3" and sweep <= 1e-9:
            sweep += 2 * math.pi
        dz = target[2] - self.pos[2]
        length = math.hypot(abs(sweep) * r, dz)
        n = min(max(1, int(length / MM_PER_ARC_SEGMENT)), MAX_ARC_SEGMENTS)
        px, py, pz = x0, y0, self.pos[2]
        for k in range(1, n + 1):
            a = a0 + sweep * k / n
            nx, ny = (cx + r * math.cos(a), cy + r * math.sin(a)) if k < n else (x1, y1)
            nz = self.pos[2] + dz * k / n
            self.planner.move(nx - px, ny - py, nz - pz, de / n, feed, tag)
            px, py, pz = nx, ny, nz
            self.all_moves.add((px, py, pz))
            if de > 0 or tag:
                self.work_moves.add((px, py, pz))
        for q in range(4):  # the arc's extreme points, which the chords may cut short
            qa = q * math.pi / 2
            off = (qa - a0) % (2 * math.pi) if sweep > 0 else (a0 - qa) % (2 * math.pi)
            if 0 < off < abs(sweep):
                point = (cx + r * math.cos(qa), cy + r * math.sin(qa), self.pos[2] + dz * off / abs(sweep))
                self.all_moves.add(point)
                if de > 0 or tag:
                    self.work_moves.add(point)
        self.pos = target
        return length


def _capped(value: float, cap: float) -> float:
    """An acceleration a machine whose configuration caps it (0: no cap) will really use."""
    return min(value, cap) if cap > 0 else value


def _center_from_radius(x0: float, y0: float, x1: float, y1: float, r: float, clockwise: bool):
    """The arc centre for the R form (negative R: the longer arc)."""
    dx, dy = x1 - x0, y1 - y0
    d = math.hypot(dx, dy)
    if d == 0 or abs(r) < d / 2:
        return (x0 + x1) / 2, (y0 + y1) / 2
    h = math.sqrt(max(r * r - d * d / 4, 0.0))
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    sign = -1 if clockwise else 1
    if r < 0:
        sign = -sign
    return mx - sign * h * dy / d, my + sign * h * dx / d
