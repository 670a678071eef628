"""Firmware profiles: what a machine's firmware can take, read from TOML and checked field by field.

Every quirk that differs between firmwares lives in a profile, so the cores stay generic.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("marlin", "grbl", "none")  # none: the agent switches its power, never streams to it
KINDS = ("printer", "mill", "laser", "other")
FLOWS = ("window", "pingpong")
DEFAULT_LONG_COMMANDS = (
    "G28",
    "G29",
    "G4",
    "M109",
    "M190",
    "M191",
    "M400",
    "M600",
    "M303",
    "M226",
    "M0",
    "M1",
)


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class LinkSettings:
    """The serial link and the firmware's receive side."""

    baud: int = 115200
    rx_buffer: int = 128
    queue_depth: int = 4
    flow: str = "window"
    line_numbers: bool = True
    ok_after_resend: bool = True
    max_line: int = 96
    open_delay_s: float = 2.0
    write_timeout_s: float = 2.0


@dataclass(frozen=True)
class Timeouts:
    """Watchdog timings: silence before a probe, and how many probes before the job faults."""

    ok_s: float = 10.0
    probes: int = 3
    long_commands: tuple[str, ...] = DEFAULT_LONG_COMMANDS
    long_command_s: float = 1800.0
    status_poll_s: float = 0.25
    stall_grace_s: float = 30.0  # after a stall is reported, how long before the machine is made safe


@dataclass(frozen=True)
class Scripts:
    """G-code (or GRBL commands) run around a job; realtime bytes are the cores' business."""

    start: tuple[str, ...] = ()
    pause: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    safe_state: tuple[str, ...] = ()
    heaters_off: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """The machine's work envelope in mm: axis -> (min, max)."""

    axes: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Motion:
    """The firmware's motion limits (what M201/M203/M204/M205 would set), for time estimates."""

    max_feedrate: tuple[float, float, float, float] | None = None  # X, Y, Z, E in mm/s
    max_accel: tuple[float, float, float, float] | None = None  # mm/s²
    jerk: tuple[float, float, float, float] | None = None  # mm/s
    accel: float | None = None
    travel_accel: float | None = None
    retract_accel: float | None = None
    junction_deviation: float = 0.0
    hotend_heat_rate: float = 2.0  # °C/s
    bed_heat_rate: float = 0.5
    home_s: float = 10.0
    laser_max_s: float = 1000.0  # the S that means full power (GRBL $30)
    filament_diameter: float = 1.75
    filament_density: float = 1.24


@dataclass(frozen=True)
class Profile:
    """Everything the agent needs to know about one firmware family on one class of machine."""

    name: str
    protocol: str
    kind: str
    description: str = ""
    link: LinkSettings = field(default_factory=LinkSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    scripts: Scripts = field(default_factory=Scripts)
    volume: Volume = field(default_factory=Volume)
    forbidden: tuple[str, ...] = ()
    max_temp_c: dict[str, float] = field(default_factory=dict)  # the highest target a file may set
    material_max_c: dict[str, float] = field(default_factory=dict)  # hotend, by the filament a file names
    capabilities: dict[str, bool] = field(default_factory=dict)
    motion: Motion = field(default_factory=Motion)
    source: str = "<memory>"

    @property
    def streamed(self) -> bool:
        """The agent streams jobs to it (False: a power-only machine, switched and metered only)."""
        return self.protocol != "none"

    @property
    def window_bytes(self) -> int:
        """Bytes that may be unacknowledged at once: a ring of N bytes holds N-1."""
        return self.link.rx_buffer - 1


HEATERS = ("hotend", "bed", "chamber")


def profile_dirs() -> list[Path]:
    """Where profiles are looked for: $AFN_PROFILES, /etc/afn-agent/profiles, the source tree's, then the
    installed package's (<venv>/share/afn-agent/profiles)."""
    dirs = [Path(p) for p in os.environ.get("AFN_PROFILES", "").split(os.pathsep) if p]
    dirs.append(Path("/etc/afn-agent/profiles"))
    dirs.append(Path(__file__).resolve().parents[2] / "firmware_profiles")
    dirs.append(Path(sys.prefix) / "share" / "afn-agent" / "profiles")  # where an installed package puts them
    return dirs


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, earlier directories winning."""
    found: dict[str, Path] = {}
    for d in reversed(profile_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = f
    return found


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (searched in profile_dirs) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and "/" not in str(name_or_path):
        known = available_profiles()
        if str(name_or_path) not in known:
            names = ", ".join(sorted(known)) or "none found"
            raise ProfileError(f"unknown profile {name_or_path!r} (known: {names})")
        path = known[str(name_or_path)]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    return parse_profile(data, str(path))


class _Reader:
    """Pulls typed fields out of a TOML table, naming file and key in every complaint."""

    def __init__(self, data: dict[str, Any], source: str, section: str) -> None:
        self.data, self.source, self.section = data, source, section
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: [{self.section}].{key}" if self.section else f"{self.source}: {key}"

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], Any] | None = None,
        expect: str = "",
    ) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ProfileError(f"{self.where(key)}: expected {expect or _kind_name(kind)}, got {value!r}")
        if check is not None and not check(value):
            raise ProfileError(f"{self.where(key)}: expected {expect}, got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None, expect="a list of strings")
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise ProfileError(f"{self.where(key)}: expected a list of strings, got {value!r}")
        return tuple(value)

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ProfileError(f"{self.where(extra[0])}: unknown key (known: {', '.join(sorted(self.seen))})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    return names.get(kind, str(kind)) if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ProfileError(f"{source}: [{key}]: expected a table, got {value!r}")
    return value


def parse_profile(data: dict[str, Any], source: str = "<memory>") -> Profile:
    """Build a Profile from parsed TOML, refusing unknown keys and wrong types."""
    top = _Reader(data, source, "")
    for section in ("profile", "link", "timeouts", "scripts", "volume", "policy", "capabilities", "motion"):
        top.seen.add(section)
        _table(data, section, source)
    top.finish()

    p = _Reader(_table(data, "profile", source), source, "profile")
    name = p.get("name", str, None)
    if not name:
        raise ProfileError(f"{p.where('name')}: required")
    protocol = p.get("protocol", str, None, lambda v: v in PROTOCOLS, "one of " + ", ".join(PROTOCOLS))
    if protocol is None:
        raise ProfileError(f"{p.where('protocol')}: required (one of {', '.join(PROTOCOLS)})")
    kind = p.get("kind", str, "printer", lambda v: v in KINDS, "one of " + ", ".join(KINDS))
    description = p.get("description", str, "")
    p.finish()

    positive = (lambda v: v > 0), "a positive number"
    r = _Reader(_table(data, "link", source), source, "link")
    link = LinkSettings(
        baud=r.get("baud", int, 115200, *positive),
        rx_buffer=r.get("rx_buffer", int, 128, lambda v: v >= 16, "an integer >= 16"),
        queue_depth=r.get("queue_depth", int, 4, *positive),
        flow=r.get("flow", str, "window", lambda v: v in FLOWS, "one of " + ", ".join(FLOWS)),
        line_numbers=r.get("line_numbers", bool, protocol == "marlin"),
        ok_after_resend=r.get("ok_after_resend", bool, True),
        max_line=r.get("max_line", int, 96, lambda v: v >= 16, "an integer >= 16"),
        open_delay_s=r.get("open_delay_s", float, 2.0, lambda v: v >= 0, "a number >= 0"),
        write_timeout_s=r.get("write_timeout_s", float, 2.0, *positive),
    )
    r.finish()
    if link.max_line >= link.rx_buffer:
        raise ProfileError(f"{source}: [link].max_line: must be below rx_buffer ({link.rx_buffer})")

    t = _Reader(_table(data, "timeouts", source), source, "timeouts")
    timeouts = Timeouts(
        ok_s=t.get("ok_s", float, 10.0, *positive),
        probes=t.get("probes", int, 3, *positive),
        long_commands=t.strings("long_commands", DEFAULT_LONG_COMMANDS),
        long_command_s=t.get("long_command_s", float, 1800.0, *positive),
        status_poll_s=t.get("status_poll_s", float, 0.25, *positive),
        stall_grace_s=t.get("stall_grace_s", float, 30.0, *positive),
    )
    t.finish()

    s = _Reader(_table(data, "scripts", source), source, "scripts")
    names = ("start", "pause", "resume", "cancel", "safe_state", "heaters_off")
    scripts = Scripts(**{k: s.strings(k) for k in names})
    s.finish()

    v = _Reader(_table(data, "volume", source), source, "volume")
    axes = {}
    for axis in ("x", "y", "z"):
        rng = v.get(axis, list, None, expect="[min, max] in mm")
        if rng is None:
            continue
        if len(rng) != 2 or not all(isinstance(x, int | float) for x in rng) or rng[0] >= rng[1]:
            raise ProfileError(f"{v.where(axis)}: expected [min, max] in mm with min < max, got {rng!r}")
        axes[axis.upper()] = (float(rng[0]), float(rng[1]))
    v.finish()

    pol = _Reader(_table(data, "policy", source), source, "policy")
    forbidden = tuple(x.upper() for x in pol.strings("forbidden"))
    max_temp = pol.get("max_temp_c", dict, {}, expect="a table of heater = °C")
    for heater, value in max_temp.items():
        where = f"{pol.where('max_temp_c')}.{heater}"
        if heater not in HEATERS:
            raise ProfileError(f"{where}: unknown heater (known: {', '.join(HEATERS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1000:
            raise ProfileError(f"{where}: expected °C between 0 and 1000, got {value!r}")
    material_max = pol.get("material_max_c", dict, {}, expect="a table of filament = °C")
    for material, value in material_max.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1000:
            where = f"{pol.where('material_max_c')}.{material}"
            raise ProfileError(f"{where}: expected °C between 0 and 1000, got {value!r}")
    pol.finish()

    caps_table = _table(data, "capabilities", source)
    caps = {}
    for key, value in caps_table.items():
        if not isinstance(value, bool):
            raise ProfileError(f"{source}: [capabilities].{key}: expected true or false, got {value!r}")
        caps[key.upper()] = value

    motion = _motion(_Reader(_table(data, "motion", source), source, "motion"))

    return Profile(
        motion=motion,
        name=name,
        protocol=protocol,
        kind=kind,
        description=description,
        link=link,
        timeouts=timeouts,
        scripts=scripts,
        volume=Volume(axes),
        forbidden=forbidden,
        max_temp_c={k: float(v) for k, v in max_temp.items()},
        material_max_c={k.upper(): float(v) for k, v in material_max.items()},
        capabilities=caps,
        source=source,
    )


def _motion(r: _Reader) -> Motion:
    def four(key: str) -> tuple[float, float, float, float] | None:
        v = r.get(key, list, None, expect="[x, y, z, e]")
        if v is None:
            return None
        if len(v) != 4 or not all(isinstance(x, int | float) and x > 0 for x in v):
            raise ProfileError(f"{r.where(key)}: expected four positive numbers [x, y, z, e], got {v!r}")
        x, y, z, e = (float(x) for x in v)
        return x, y, z, e

    positive = (lambda v: v > 0), "a positive number"
    m = Motion(
        max_feedrate=four("max_feedrate"),
        max_accel=four("max_accel"),
        jerk=four("jerk"),
        accel=r.get("accel", float, None, *positive),
        travel_accel=r.get("travel_accel", float, None, *positive),
        retract_accel=r.get("retract_accel", float, None, *positive),
        junction_deviation=r.get("junction_deviation", float, 0.0, lambda v: v >= 0, "a number >= 0"),
        hotend_heat_rate=r.get("hotend_heat_rate", float, 2.0, *positive),
        bed_heat_rate=r.get("bed_heat_rate", float, 0.5, *positive),
        home_s=r.get("home_s", float, 10.0, lambda v: v >= 0, "a number >= 0"),
        laser_max_s=r.get("laser_max_s", float, 1000.0, *positive),
        filament_diameter=r.get("filament_diameter", float, 1.75, *positive),
        filament_density=r.get("filament_density", float, 1.24, *positive),
    )
    r.finish()
    return m
