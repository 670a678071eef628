"""The G-code of the machine console (jog, zero, probe, frame, tool change, preheat, filament), per family.

Sans-I/O like the cores: these classes only turn a person's set-up action into command text, or refuse
it with the reason (`NotHere`). The machine thread queues their lines as host lines and reads the
answers; nothing here knows a port, a thread or a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

Bounds = Mapping[str, tuple[float, float]]  # axis -> (low, high)


class NotHere(ValueError):
    """This firmware cannot do that action (no homing, no babystepping …). `key` names the reason in the
    agent's catalogues (`refused.<key>`); the words are the machine thread's to give, not this layer's."""

    def __init__(self, key: str, **facts: object) -> None:
        super().__init__(key)
        self.key, self.facts = key, facts


class Homes(Protocol):
    @property
    def homing_enabled(self) -> bool: ...  # GRBL `$22=1`


class HasCapabilities(Protocol):
    capabilities: dict[str, bool]  # Marlin `Cap:` lines from M115


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def _words(axes: Mapping[str, float]) -> str:
    return " ".join(f"{axis}{_num(v)}" for axis, v in sorted(axes.items()))


class GrblConsole:
    """GRBL 1.1 (and kin): `$J=` jogs cancelled by 0x85, `G10 L20 P1` work zero, `G38.2` probing."""

    jog_cancels = True  # a jog can be stopped at once (0x85) — continuous jog is possible

    def __init__(self, core: Homes) -> None:
        self.core = core

    def jog(self, axes: Mapping[str, float], feed: float) -> tuple[str, ...]:
        """A relative step, in millimetres."""
        return (f"$J=G91 G21 {_words(axes)} F{_num(feed)}",)

    def jog_to(self, axis: str, machine_target: float, feed: float) -> tuple[str, ...]:
        """Towards a travel end in machine coordinates: a continuous jog that a release cancels."""
        return (f"$J=G53 G90 G21 {axis}{_num(machine_target)} F{_num(feed)}",)

    def zero(self, axes: Mapping[str, float]) -> tuple[str, ...]:
        """The current position becomes these work coordinates (G54)."""
        return (f"G10 L20 P1 {_words(axes)}",)

    def go_to_zero(self, safe_z: float) -> tuple[str, ...]:
        return (f"G53 G0 Z{_num(safe_z)}", "G90 G0 X0 Y0")

    def home(self) -> tuple[str, ...]:
        if not self.core.homing_enabled:
            raise NotHere("no-homing")
        return ("$H",)

    def probe(self, work_z_target: float, feed: float) -> tuple[str, ...]:
        """Down until the tool touches the plate (an alarm if it never does)."""
        return (f"G90 G38.2 Z{_num(work_z_target)} F{_num(feed)}",)

    def after_probe(self, plate_mm: float, retract_mm: float) -> tuple[str, ...]:
        """The tool rests on the plate: the stock's top is the plate's thickness below; then clear it."""
        return (f"G10 L20 P1 Z{_num(plate_mm)}", f"G90 G0 Z{_num(plate_mm + retract_mm)}")

    def frame(self, box: Bounds, safe_z: float | None, feed: float, power: float) -> tuple[str, ...]:
        """Trace the job's X/Y box: spindle off at a safe height (mill), or beam off / at low power (laser).
        `safe_z` None: no Z move (a laser's focus stays)."""
        (x0, x1), (y0, y1) = box["X"], box["Y"]
        lines = ["M5"]
        if safe_z is not None:
            lines.append(f"G53 G0 Z{_num(safe_z)}")
        lines.append(f"G90 G0 X{_num(x0)} Y{_num(y0)}")
        if power > 0:
            lines.append(f"M3 S{_num(power)}")
        move = f"G1 F{_num(feed)}" if power > 0 else "G0"
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0)):
            lines.append(f"{move} X{_num(x)} Y{_num(y)}")
        if power > 0:
            lines.append("M5")
        return tuple(lines)

    def tool_change(self, safe_z: float, park: Mapping[str, float] | None) -> tuple[str, ...]:
        """Spindle off, up to a safe height, then to the tool-change place (machine coordinates)."""
        lines = ["M5", f"G53 G0 Z{_num(safe_z)}"]
        if park:
            xy = {k: v for k, v in park.items() if k in "XY"}
            if xy:
                lines.append(f"G53 G0 {_words(xy)}")
            if "Z" in park:
                lines.append(f"G53 G0 Z{_num(park['Z'])}")
        return tuple(lines)

    def preheat(self, hotend: float | None, bed: float | None) -> tuple[str, ...]:
        """Targets in °C; None leaves that heater's target as it is."""
        raise NotHere("no-heaters")

    def filament(self, mm: float, feed: float) -> tuple[str, ...]:
        raise NotHere("no-extruder")

    def raise_z(self, mm: float, feed: float) -> tuple[str, ...]:
        return (f"$J=G91 G21 Z{_num(mm)} F{_num(feed)}",)

    def babystep(self, z_mm: float) -> tuple[str, ...]:
        raise NotHere("babystep-printer")


class MarlinConsole:
    """Marlin-class printers: relative moves for jogs, M104/M140 preheat, M290 babysteps."""

    jog_cancels = False  # no jog cancel: steps only

    def __init__(self, core: HasCapabilities) -> None:
        self.core = core

    def jog(self, axes: Mapping[str, float], feed: float) -> tuple[str, ...]:
        return ("G91", f"G0 {_words(axes)} F{_num(feed)}", "G90")

    def jog_to(self, axis: str, machine_target: float, feed: float) -> tuple[str, ...]:
        raise NotHere("no-jog-cancel")

    def zero(self, axes: Mapping[str, float]) -> tuple[str, ...]:
        return (f"G92 {_words(axes)}",)

    def go_to_zero(self, safe_z: float) -> tuple[str, ...]:
        raise NotHere("origin-by-homing")

    def home(self) -> tuple[str, ...]:
        return ("G28",)

    def probe(self, work_z_target: float, feed: float) -> tuple[str, ...]:
        raise NotHere("probe-mills")

    def after_probe(self, plate_mm: float, retract_mm: float) -> tuple[str, ...]:
        raise NotHere("probe-mills")

    def frame(self, box: Bounds, safe_z: float | None, feed: float, power: float) -> tuple[str, ...]:
        raise NotHere("frame-mills")

    def tool_change(self, safe_z: float, park: Mapping[str, float] | None) -> tuple[str, ...]:
        raise NotHere("m600")

    def preheat(self, hotend: float | None, bed: float | None) -> tuple[str, ...]:
        return tuple(f"{code} S{_num(c)}" for code, c in (("M104", hotend), ("M140", bed)) if c is not None)

    def filament(self, mm: float, feed: float) -> tuple[str, ...]:
        """Extrude (load, mm > 0) or retract (unload, mm < 0) relative to where the extruder is."""
        return ("M83", f"G1 E{_num(mm)} F{_num(feed)}", "M82")

    def raise_z(self, mm: float, feed: float) -> tuple[str, ...]:
        return ("G91", f"G0 Z{_num(mm)} F{_num(feed)}", "G90")

    def babystep(self, z_mm: float) -> tuple[str, ...]:
        if not self.core.capabilities.get("BABYSTEPPING", False):
            raise NotHere("no-babystepping")
        return (f"M290 Z{_num(z_mm)}",)
