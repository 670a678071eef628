"""One pass over a job: what it will cost in material (per tool, mm and g), read as a stream.

The same `Analyzer` is fed line by line while streaming (acknowledged lines only) to count what was
actually used, so the quote and the bill come from one piece of code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .lexer import COMMA_DECIMAL, UNREAD, Command, GcodeError, lex
from .material import MaterialCounter, grams
from .motion import Limits
from .producer import CONVENTIONS, Convention, detect, header_value, slicer_limits
from .timeline import HeatModel, Timeline

MAX_WARNINGS = 50
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
    filament_mm: float
    filament_mm_per_tool: dict[int, float]
    filament_g: float
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
    bounds: dict | None = None
    bounds_all_moves: dict | None = None
    laser_on_s: float = 0.0
    laser_on_mm: float = 0.0
    spindle_on_s: float = 0.0
    cutting_mm: float = 0.0
    rapid_mm: float = 0.0
    tools: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    ) -> None:
        self.name = name
        self.material = MaterialCounter()
        self.timeline = Timeline(limits.copy() if limits else None, heat, grbl_dialect=grbl)
        self.lines = 0
        self.commands = 0
        self.comma_decimals = 0
        self.warnings: list[str] = []
        self.producer = "unknown"
        self.header: dict[str, float] = {}
        self._diameter, self._density = diameter_mm, density_g_cm3
        self._count_start: tuple[float, float] | None = None

    @property
    def convention(self) -> Convention:
        return CONVENTIONS[self.producer]

    def feed_line(self, raw: str) -> Command | None:
        """Read one raw line of the file (comments included: they name the producer and its settings)."""
        self.lines += 1
        stripped = raw.lstrip()
        if stripped.startswith(";"):
            self._comment(stripped.rstrip())
        cmd = lex(raw, self.lines)
        if cmd is not None:
            self.feed(cmd)
        return cmd

    def feed(self, cmd: Command) -> float:
        """Account one command; returns the filament (mm) it used."""
        self.commands += 1
        if cmd.flags:
            self._flagged(cmd)
        used = self.material.feed(cmd)
        self.timeline.feed_command(cmd, self.material.last_delta)
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
                self.material.current.debt_mm = hv[1]

    def result(self) -> Analysis:
        """The figures so far (the planner is run to a stop: call at the end of the file)."""
        mat, tl = self.material, self.timeline
        tl.finish()
        diameter = self._diameter or self.header.get("diameter") or DEFAULT_DIAMETER
        density = self._density or self.header.get("density") or DEFAULT_DENSITY
        if density > 100:  # ideaMaker writes kg/m³
            density /= 1000
        total = mat.total_mm()
        conv = self.convention
        counted = mat.total_since(self._count_start) if self._count_start else total
        if conv.scale_key and "compensation" in self.header:
            counted *= (self.header["compensation"] / 100) ** 2
        return Analysis(
            file=self.name,
            lines=self.lines,
            commands=self.commands,
            producer=self.producer,
            convention=conv.note,
            filament_mm=total,
            filament_mm_per_tool=mat.per_tool_mm(),
            filament_g=grams(total, diameter, density),
            diameter_mm=diameter,
            density_g_cm3=density,
            producer_count_mm=counted,
            producer_count_g=grams(counted, diameter, density),
            relative_e_inferred=mat.relative_inferred(),
            comma_decimals=self.comma_decimals,
            warnings=list(self.warnings),
            estimated_s=tl.seconds,
            moving_s=tl.moving_s,
            heating_s=tl.heating_s,
            dwell_s=tl.dwell_s,
            other_s=tl.other_s,
            bounds=tl.work_moves.as_dict(),
            bounds_all_moves=tl.all_moves.as_dict(),
            laser_on_s=tl.beam_s(),
            laser_on_mm=tl.beam_mm,
            spindle_on_s=tl.spindle_s(),
            cutting_mm=tl.cut_mm,
            rapid_mm=tl.rapid_mm,
            tools=list(tl.tools_used),
        )


def analyze_file(path: str | Path, **kw) -> Analysis:
    """Analyse a whole file, reading it as a stream (constant memory whatever its size).

    Without given limits, the slicer's own machine limits (from its configuration block) are used.
    """
    path = Path(path)
    if kw.get("limits") is None:
        kw["limits"] = limits_from_slicer(path)
    analyzer = Analyzer(str(path), **kw)
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for raw in f:
                analyzer.feed_line(raw)
    except OSError as exc:
        raise GcodeError(f"{path}: cannot read: {exc.strerror}") from exc
    return analyzer.result()


def limits_from_slicer(path: str | Path, base: Limits | None = None) -> Limits:
    """Default limits overridden by what the file's slicer configuration says about the machine."""
    limits = (base or Limits()).copy()
    for field_name, axis, value in slicer_limits(path).values():
        if axis is None:
            setattr(limits, field_name, value)
        else:
            getattr(limits, field_name)[axis] = value
    return limits
