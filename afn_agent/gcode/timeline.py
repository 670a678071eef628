"""What the machine does over a job, command by command: where it goes, how long it takes, what it heats.

Modes, units and offsets; dwell, homing and heating waits; laser and spindle on-time. The moves
themselves (arcs into chords, the planner, bounds) run in the compiled `Core` this shares with the
material counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._core import BEAM, POWER_SHIFT, SPINDLE, Core
from .lexer import Command, tool_number
from .motion import AXES, Limits

INCH = 25.4
MOTIONS = {"G0": 0, "G1": 1, "G2": 2, "G3": 3}
SPINDLE_MODES = {"M3": 3, "M4": 4}


@dataclass
class HeatModel:
    """How fast heaters change (°C/s) and where they start; waits are charged as heating time."""

    hotend_rate: float = 2.0
    bed_rate: float = 0.5
    cool_rate: float = 0.5
    ambient: float = 25.0
    home_s: float = 10.0


def bounds_dict(pair: tuple[tuple[float, ...], tuple[float, ...]] | None) -> dict[str, list[float]] | None:
    """Min and max per axis, rounded to the micron, or None when nothing moved."""
    if pair is None:
        return None
    lo, hi = pair
    return {a: [round(lo[i], 3), round(hi[i], 3)] for i, a in enumerate("XYZ")}


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
        core: Core,
        limits: Limits | None = None,
        heat: HeatModel | None = None,
        grbl_dialect: bool = False,
        laser_max_s: float = 1000.0,
    ) -> None:
        self.core = core
        core.set_limits(limits or Limits())  # the file's M201-M205 change them in the core
        core.grbl = grbl_dialect
        core.laser_max_s = laser_max_s
        self.heat = heat or HeatModel()
        self.heating_s = 0.0
        self.dwell_s = 0.0
        self.other_s = 0.0
        self.tools_used: list[int] = []
        self._spindle_still = 0.0  # dwell while the spindle turns
        self._heaters = {
            "T": _Heater(self.heat, self.heat.hotend_rate),
            "B": _Heater(self.heat, self.heat.bed_rate),
        }

    # ---- totals -------------------------------------------------------------------------------
    @property
    def moving_s(self) -> float:
        return self.core.moving_s

    @property
    def seconds(self) -> float:
        return self.moving_s + self.dwell_s + self.heating_s + self.other_s

    def bounds(self, working: bool) -> dict[str, list[float]] | None:
        """Bounds of the moves that make the part (extruding, cutting, burning), or of every move."""
        return bounds_dict(self.core.bounds(working))

    def beam_s(self) -> float:
        return sum(t for tag, t in self.core.time_by_tag().items() if tag & BEAM)

    def beam_full_power_s(self) -> float:
        """Beam time weighted by power (S over the profile's full scale): what a laser tube wears by."""
        return sum(t * (tag >> POWER_SHIFT) / 100 for tag, t in self.core.time_by_tag().items() if tag & BEAM)

    def spindle_s(self) -> float:
        return sum(t for tag, t in self.core.time_by_tag().items() if tag & SPINDLE) + self._spindle_still

    def finish(self) -> None:
        self.core.flush()

    # ---- commands -----------------------------------------------------------------------------
    def feed_command(self, cmd: Command, de: float) -> None:
        """Account one command; `de` is the signed filament move the material counter read from it."""
        core, p = self.core, cmd.params
        codes = (cmd.name, *cmd.also) if cmd.also else (cmd.name,)
        motion = None
        for code in codes:
            if code in MOTIONS:
                motion = MOTIONS[code]
            else:
                self._modal(code, cmd)
        if motion is None and not cmd.name and (set(p) & {"X", "Y", "Z", "E", "I", "J"}):
            motion = core.motion  # modal words alone move with the last motion command
        if f := p.get("F"):
            core.set_feed_word(f)
        power = p.get("S")
        if power is not None and (motion is not None or not cmd.name):  # `G1 X1 S800`, `S90`
            core.spindle = power
        if motion is not None:
            g = p.get
            core.move(motion, g("X"), g("Y"), g("Z"), g("I"), g("J"), g("R"), de)

    def _modal(self, code: str, cmd: Command) -> None:
        core, p = self.core, cmd.params
        if code in ("G90", "G91"):
            core.relative = code == "G91"
        elif code in ("G20", "G21"):
            core.inches = code == "G20"
        elif code == "G92":
            pos, offset = core.pos, list(core.offset)
            for i, a in enumerate("XYZ"):
                if (v := p.get(a)) is not None:
                    offset[i] = pos[i] - self._mm(v)
            core.offset = (0.0, 0.0, 0.0) if not p else (offset[0], offset[1], offset[2])
        elif code == "G4":
            self._wait(self._dwell(cmd), "dwell")
        elif code == "G28":
            self._wait(self.heat.home_s, "other")
            x, y, z = (0.0 if (not p or a in p) else v for a, v in zip("XYZ", core.pos, strict=True))
            core.pos = (x, y, z)
        elif code in ("M104", "M109", "M140", "M190"):
            self._temperature(code, cmd)
        elif code in SPINDLE_MODES:
            core.spindle_mode = SPINDLE_MODES[code]
            if (s := p.get("S")) is not None:
                core.spindle = s
        elif code == "M5":
            core.spindle_mode = 0
        elif code in ("M201", "M203", "M204", "M205", "M220"):
            self._limits(code, p)
        elif code[:1] == "T" and code[1:].isdigit() and int(code[1:]) not in self.tools_used:
            self.tools_used.append(int(code[1:]))
        elif code == "M6" and (t := p.get("T")) is not None:
            tool = tool_number(t)
            if tool >= 0 and tool not in self.tools_used:
                self.tools_used.append(tool)

    def _mm(self, v: float) -> float:
        return v * INCH if self.core.inches else v

    def _dwell(self, cmd: Command) -> float:
        p, s = cmd.params.get("P"), cmd.params.get("S")
        if s is not None:
            return s
        if p is not None:
            return p if self.core.grbl else p / 1000.0  # GRBL's G4 P is seconds, RepRap's milliseconds
        return 0.0

    def _wait(self, seconds: float, kind: str) -> None:
        self.core.flush()
        seconds = max(seconds, 0.0)  # a negative dwell (`G4 P-5`) waits for nothing
        if kind == "dwell":
            self.dwell_s += seconds
            if self.core.spindle_mode and self.core.spindle > 0:
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

    def _limits(self, code: str, words: dict[str, float | None]) -> None:
        """In-file machine limits, as the firmware takes them (straight into the planner)."""
        core = self.core
        p = {k: v for k, v in words.items() if v is not None}  # a bare letter sets nothing
        if code in ("M201", "M203"):
            setter = core.set_max_accel if code == "M201" else core.set_max_feedrate
            for a in AXES:
                if p.get(a):
                    setter(a, p[a])
        elif code == "M204":
            if "S" in p:  # legacy form: one acceleration for printing and travel
                core.accel = _capped(p["S"], core.max_accel_extruding)
                core.travel_accel = _capped(p["S"], core.max_accel_travel)
                if "T" in p:
                    core.retract_accel = p["T"]
            else:
                if "P" in p:
                    core.accel = _capped(p["P"], core.max_accel_extruding)
                if "R" in p:
                    core.retract_accel = p["R"]
                if "T" in p:
                    core.travel_accel = _capped(p["T"], core.max_accel_travel)
        elif code == "M205":
            for a in AXES:
                if a in p:
                    core.set_jerk(a, p[a])
            if "S" in p:
                core.min_feedrate = p["S"]
            if "T" in p:
                core.min_travel_feedrate = p["T"]
            if "J" in p:
                core.junction_deviation = p["J"]
        elif code == "M220" and p.get("S"):
            core.feed_factor = p["S"] / 100.0


def _capped(value: float, cap: float) -> float:
    """An acceleration a machine whose configuration caps it (0: no cap) will really use."""
    return min(value, cap) if cap > 0 else value
