"""One pass over a job: what it will cost in material (per tool, mm and g), read as a stream.

The same `Analyzer` is fed line by line while streaming (acknowledged lines only) to count what was
actually used, so the quote and the bill come from one piece of code.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core import MAX_TOOLS, Core
from .lexer import COMMA_DECIMAL, UNREAD, Command, GcodeError, lex
from .material import MaterialCounter, grams
from .motion import Limits
from .policy import Policy
from .producer import CONVENTIONS, TAIL_BYTES, Convention, detect, header_value, slicer_limits, stated_time
from .timeline import HeatModel, Timeline

if TYPE_CHECKING:
    from ..firmware.profile import Profile

MAX_WARNINGS = 50
HEAD_BYTES = 64 * 1024
COMMENT_LINE = re.compile(r"^;[^\r\n]*", re.M)
DEFAULT_DIAMETER = 1.75
DEFAULT_DENSITY = 1.24  # PLA, g/cm³
HEADER_KEYS = {
    "filament_diameter": "diameter",
    "filament diameter #1": "diameter",
    "filament_density": "density",
    "filament density #1": "density",
    "filament compensation #1": "compensation",
    "destring_length": "destring_length",
    "filamentdiameter": "diameter",
    "filamentdiameters": "diameter",
    "filamentdensity": "density",
    "filamentdensities": "density",
}


@dataclass
class Analysis:
    """What a job will use; `producer_count_mm` is our count by its producer's own convention."""

    file: str
    lines: int
    commands: int
    producer: str
    convention: str
    material_mm: float  # what the extruder pushes (flow from M221 included): what is billed
    material_mm_per_tool: dict[int, float]
    material_g: float
    diameter_mm: float
    density_g_cm3: float
    producer_count_mm: float
    producer_count_g: float
    relative_e_inferred: bool
    comma_decimals: int
    estimated_s: float = 0.0
    moving_s: float = 0.0
    heating_s: float = 0.0
    dwell_s: float = 0.0
    other_s: float = 0.0
    bounds: dict[str, list[float]] | None = None  # axis: [low, high]
    bounds_all_moves: dict[str, list[float]] | None = None
    beam_on_s: float = 0.0
    beam_on_mm: float = 0.0
    beam_full_power_s: float = 0.0
    spindle_on_s: float = 0.0
    cutting_mm: float = 0.0
    rapid_mm: float = 0.0
    tools: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policy_violations: list[dict[str, Any]] = field(default_factory=list)
    unknown_commands: dict[str, int] = field(default_factory=dict)
    fit_problems: list[str] = field(default_factory=list)
    stated_estimate_s: float | None = None  # the slicer's own estimate, where it writes one

    @property
    def refused(self) -> str:
        """Why the job may not run on this machine ('' when it may)."""
        reasons = list(self.fit_problems)
        if self.policy_violations:
            first = self.policy_violations[0]
            reasons.append(
                f"{len(self.policy_violations)} forbidden command(s), first {first['command']!r} "
                f"at line {first['line']} (rule {first['rule']})"
            )
        return "; ".join(reasons)


class Analyzer:
    """Feed lines (or lexed commands) in order; ask for the result at any time."""

    def __init__(
        self,
        name: str = "<stream>",
        diameter_mm: float | None = None,
        density_g_cm3: float | None = None,
        limits: Limits | None = None,
        heat: HeatModel | None = None,
        grbl: bool = False,
        policy: Policy | None = None,
        volume: dict[str, tuple[float, float]] | None = None,
        absolute_volume: bool = True,
        kind: str = "",
        laser_max_s: float = 1000.0,
    ) -> None:
        self.name = name
        self.kind = kind  # printer, mill, laser; '' when unknown (every figure is reported)
        self.default_diameter, self.default_density = DEFAULT_DIAMETER, DEFAULT_DENSITY
        self.core = Core()
        self.material = MaterialCounter(self.core)
        self.timeline = Timeline(
            self.core, limits.copy() if limits else None, heat, grbl_dialect=grbl, laser_max_s=laser_max_s
        )
        self.policy = policy
        if policy is not None:  # moves a rule names are read in Python, where the policy looks
            self.core.policed = sum(1 << k for k in range(4) if f"G{k}" in policy.names)
        self.volume = volume or {}
        self.absolute_volume = absolute_volume
        self.comma_decimals = 0
        self.warnings: list[str] = []
        self.producer = "unknown"
        self.header: dict[str, float] = {}
        self._diameter, self._density = diameter_mm, density_g_cm3
        self._count_start: tuple[float, float] | None = None

    @property
    def convention(self) -> Convention:
        return CONVENTIONS[self.producer]

    @property
    def lines(self) -> int:
        return self.core.lines

    @property
    def commands(self) -> int:
        return self.core.commands

    def feed_line(self, raw: str) -> None:
        """Read one raw line of the file (comments included: they name the producer and its settings).

        Plain moves are accounted by the compiled core without leaving C; it hands back the rest."""
        if self.core.line(raw):
            self.read_line(raw)

    def feed_lines(self, lines: Iterable[str]) -> None:
        """`feed_line` for each, in order (a burst of answered lines)."""
        line = self.core.line
        for raw in lines:
            if line(raw):
                self.read_line(raw)

    def read_line(self, raw: str) -> Command | None:
        """A line the core handed back (already counted as read): comment, modal or vendor command."""
        stripped = raw.lstrip()
        if stripped.startswith(";"):
            self._comment(stripped.rstrip())
        cmd = lex(raw, self.core.lines)
        if cmd is not None:
            self.feed(cmd)
            if self.policy is not None:
                self.policy.check(cmd, raw)
        return cmd

    def feed(self, cmd: Command) -> float:
        """Account one command; returns the filament (mm) it used."""
        self.core.count_command()
        if cmd.flags:
            self._flagged(cmd)
        used = self.material.feed(cmd)
        self.timeline.feed_command(cmd, self.core.last_delta)
        return used

    def _flagged(self, cmd: Command) -> None:
        if cmd.flags & COMMA_DECIMAL:
            self.comma_decimals += 1
            self._warn(cmd.line, "number with a decimal comma, read as a decimal point")
        if cmd.flags & UNREAD:
            self._warn(cmd.line, f"text that is not G-code was skipped in {cmd.name or 'a line'}")

    def _warn(self, line: int, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.name}:{line}: {text}")

    def _comment(self, comment: str) -> None:
        if self.policy is not None:
            self.policy.note_comment(comment)
        if self.producer == "unknown" and self.lines <= 200:
            self.producer = detect(comment) or "unknown"
        conv = self.convention
        if conv.count_from and self._count_start is None and comment.startswith(conv.count_from):
            self._count_start = self.material.snapshot()
        hv = header_value(comment)
        if hv is None:
            return
        key = HEADER_KEYS.get(hv[0].lower())
        if key and hv[1] > 0:
            self.header.setdefault(key, hv[1])
            if key == conv.start_debt_key and not self.material.started():
                self.material.set_start_debt(hv[1])

    def result(self) -> Analysis:
        """The figures so far (the planner is run to a stop: call at the end of the file)."""
        mat, tl = self.material, self.timeline
        tl.finish()
        diameter, density = self._filament()
        total = mat.pushed_mm()
        conv = self.convention
        counted = mat.total_since(self._count_start) if self._count_start else mat.total_mm()
        if conv.scale_key and "compensation" in self.header:
            counted *= (self.header["compensation"] / 100) ** 2
        return Analysis(
            file=self.name,
            lines=self.lines,
            commands=self.commands,
            producer=self.producer,
            convention=conv.note,
            material_mm=total,
            material_mm_per_tool=mat.per_tool_mm(pushed=True),
            material_g=grams(total, diameter, density),
            diameter_mm=diameter,
            density_g_cm3=density,
            producer_count_mm=counted,
            producer_count_g=grams(counted, diameter, density),
            relative_e_inferred=mat.relative_inferred(),
            comma_decimals=self.comma_decimals,
            warnings=list(self.warnings) + self._tool_warning(),
            estimated_s=tl.seconds,
            moving_s=tl.moving_s,
            heating_s=tl.heating_s,
            dwell_s=tl.dwell_s,
            other_s=tl.other_s,
            bounds=tl.bounds(working=True),
            bounds_all_moves=tl.bounds(working=False),
            beam_on_s=tl.beam_s() if self.kind in ("laser", "") else 0.0,
            beam_on_mm=self.core.beam_mm if self.kind in ("laser", "") else 0.0,
            beam_full_power_s=tl.beam_full_power_s() if self.kind in ("laser", "") else 0.0,
            spindle_on_s=tl.spindle_s() if self.kind in ("mill", "") else 0.0,
            cutting_mm=self.core.cut_mm,
            rapid_mm=self.core.rapid_mm,
            tools=list(tl.tools_used),
            policy_violations=[
                {"line": v.line, "rule": v.pattern, "command": v.command}
                for v in self.policy.all_violations()
            ]
            if self.policy
            else [],
            unknown_commands=dict(self.policy.unknown_names) if self.policy else {},
            fit_problems=self._fit(tl.bounds(working=False)),
        )

    def _tool_warning(self) -> list[str]:
        n = self.material.tools_out_of_range
        if not n:
            return []
        return [
            f"{self.name}: {n} command(s) name a tool beyond T{MAX_TOOLS - 1}; its filament is counted "
            "on the tool in use before"
        ]

    def used_so_far(self) -> dict[str, Any]:
        """Material per tool and beam/spindle time of what was fed so far, for a running job's
        checkpoints; cheap, and leaves the planner running (its last few moves are not counted yet)."""
        diameter, density = self._filament()
        tl = self.timeline
        per_tool = {
            str(tool): {"mm": mm, "g": grams(mm, diameter, density)}
            for tool, mm in self.material.per_tool_mm(pushed=True).items()
        }
        return {
            "material_per_tool": per_tool,
            "material_mm": sum(v["mm"] for v in per_tool.values()),
            "material_g": sum(v["g"] for v in per_tool.values()),
            "beam_on_s": tl.beam_s() if self.kind in ("laser", "") else 0.0,
            "spindle_on_s": tl.spindle_s() if self.kind in ("mill", "") else 0.0,
            "estimated_s": tl.seconds,
        }

    def _filament(self) -> tuple[float, float]:
        """Diameter (mm) and density (g/cm³): given, else the file's header, else the defaults."""
        diameter = self._diameter or self.header.get("diameter") or self.default_diameter
        density = self._density or self.header.get("density") or self.default_density
        if density > 100:  # ideaMaker writes kg/m³
            density /= 1000
        return diameter, density

    def _fit(self, bounds: dict[str, list[float]] | None) -> list[str]:
        """Moves outside the machine's volume (printers), or a job larger than it (mills, lasers:
        their work offsets are set at the machine, so only the size can be checked here)."""
        problems: list[str] = []
        if not bounds:
            return problems
        for axis, (lo, hi) in self.volume.items():
            got_lo, got_hi = bounds[axis]
            if self.absolute_volume:
                if got_lo < lo - 1e-6 or got_hi > hi + 1e-6:
                    problems.append(
                        f"{axis} goes from {got_lo:g} to {got_hi:g} mm; the machine reaches {lo:g} to {hi:g}"
                    )
            elif got_hi - got_lo > hi - lo + 1e-6:
                problems.append(f"{axis} spans {got_hi - got_lo:g} mm; the machine travels {hi - lo:g}")
        return problems


Progress = Callable[[int, int], None]  # (bytes read, file size): a long analysis shows it is moving


def analyze_file(path: str | Path, progress: Progress | None = None, **kw: Any) -> Analysis:
    """Analyse a whole file, reading it as a stream (constant memory whatever its size).

    Without given limits, the slicer's own machine limits (from its configuration block) are used.
    """
    path = Path(path)
    if kw.get("limits") is None:
        kw["limits"] = limits_from_slicer(path)
    return _read(Analyzer(str(path), **kw), path, progress)


def _read(analyzer: Analyzer, path: Path, progress: Progress | None = None) -> Analysis:
    """Feed a whole file, line by line, and take the result; `progress` is told after each megabyte."""
    fast, slow = analyzer.core.line, analyzer.read_line
    try:
        with open(path, "rb") as data, io.TextIOWrapper(data, "utf-8", "replace", newline="") as f:
            size = os.fstat(data.fileno()).st_size
            while batch := f.readlines(1 << 20):
                for raw in batch:
                    if fast(raw):
                        slow(raw)
                if progress is not None:
                    progress(data.tell(), size)
    except OSError as exc:
        raise GcodeError(f"{path}: cannot read: {exc.strerror}") from exc
    result = analyzer.result()
    result.stated_estimate_s = stated_time(path)
    return result


def limits_from_slicer(path: str | Path, base: Limits | None = None) -> Limits:
    """Default limits overridden by what the file's slicer configuration says about the machine."""
    limits = (base or Limits()).copy()
    for field_name, axis, value in slicer_limits(path).values():
        if axis is None:
            setattr(limits, field_name, value)
        else:
            getattr(limits, field_name)[axis] = value
    return limits


def analyzer_for(
    profile: Profile,
    name: str = "<stream>",
    path: str | Path | None = None,
    density_g_cm3: float | None = None,
) -> Analyzer:
    """An analyzer set up for a machine profile: its limits (else the slicer's), heating, policy, volume;
    grams at `density_g_cm3` when given (the loaded material's), else at the file's stated density."""
    m = profile.motion
    base = limits_from_slicer(path) if path is not None else Limits()
    for attr, values in (("max_feedrate", m.max_feedrate), ("max_accel", m.max_accel), ("jerk", m.jerk)):
        if values:
            getattr(base, attr).update(dict(zip("XYZE", values, strict=True)))
    for attr in ("accel", "travel_accel", "retract_accel"):
        if getattr(m, attr):
            setattr(base, attr, getattr(m, attr))
    if m.junction_deviation:
        base.junction_deviation = m.junction_deviation
    heat = HeatModel(hotend_rate=m.hotend_heat_rate, bed_rate=m.bed_heat_rate, home_s=m.home_s)
    analyzer = Analyzer(
        name,
        diameter_mm=None,
        density_g_cm3=density_g_cm3,
        limits=base,
        heat=heat,
        grbl=profile.protocol == "grbl",
        policy=Policy(profile.forbidden, profile.protocol, profile.max_temp_c, profile.material_max_c),
        volume=profile.volume.axes,
        absolute_volume=profile.kind == "printer",
        kind=profile.kind,
        laser_max_s=m.laser_max_s,
    )
    analyzer.default_diameter, analyzer.default_density = m.filament_diameter, m.filament_density
    if path is not None:  # the file's own filament settings win over the profile's
        analyzer.header.update(material_from_file(path))
    return analyzer


def file_ends(path: str | Path) -> tuple[str, str]:
    """A file's first and last few hundred kB, where slicers state their settings ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(0, 2)
            f.seek(max(f.tell() - TAIL_BYTES, len(head)))
            tail = f.read()
    except OSError:
        return "", ""
    return head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")


def material_from_file(path: str | Path) -> dict[str, float]:
    """Filament diameter and density a file's header or configuration block states (head and tail only)."""
    found: dict[str, float] = {}
    for chunk in file_ends(path):
        for comment in COMMENT_LINE.findall(chunk):  # the comment lines only: a job starts on each call
            if hv := header_value(comment):
                key = HEADER_KEYS.get(hv[0].lower())
                if key in ("diameter", "density") and hv[1] > 0:
                    found.setdefault(key, hv[1])
    return found


def analyze_path(
    path: str | Path, profile: Profile | None = None, progress: Progress | None = None
) -> Analysis:
    """Analyse a file for a machine profile (or with the slicer's own limits when there is none)."""
    if profile is None:
        return analyze_file(path, progress)
    path = Path(path)
    return _read(analyzer_for(profile, str(path), path), path, progress)
