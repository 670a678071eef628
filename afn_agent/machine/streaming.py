"""One job being streamed: everything that lives exactly as long as the job, dropped at its end.

Owned by the machine thread. Other threads read only `acked_lines`, `progress()` and `last_used`,
each a single value replaced, never changed in place.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..gcode.analyzer import Analyzer
from .events import JobResult
from .job import JobFile, JobPos


@dataclass(slots=True)
class Counters:
    """The link's counters when the job started; the job's figures are the difference."""

    t0: float
    bytes: int
    resends: int
    errors: int


@dataclass(slots=True)
class StreamingJob:
    file: JobFile
    start: Counters
    usage: Analyzer | None  # the quote's analyzer, fed each acknowledged line
    check: bool = False  # GRBL check mode: parsed, never moved
    acked: JobPos | None = None
    acked_lines: int = 0
    paused: bool = False
    ending: str = ""  # completed | cancelled, once the end lines are on their way
    ending_who: str = ""
    ending_reason: str = ""  # a firmware error that turned the cancel into a failure
    check_errors: list[dict[str, Any]] = field(default_factory=list)
    heating: bool = False
    last_progress: float = 0.0
    last_used: dict[str, Any] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)  # a prompt line's comment, by its line number
    held_for_tool: bool = False  # an M6 reached: nothing more is fed until a person continues
    ahead: deque[tuple[str, JobPos, str]] = field(default_factory=deque)  # read, not sent: text, pos, note
    unreadable: str = ""  # the file failed at the line after `ahead`: the job fails once those are sent

    @property
    def path(self) -> str:
        return str(self.file.path)

    def on_acked(self, last: JobPos, texts: tuple[str, ...]) -> bool:
        """Job lines answered in a row (one, or a burst's), `last` the position of the last; True if
        they include the job's first."""
        first = self.acked_lines == 0
        self.acked = last
        self.acked_lines += len(texts)
        if self.usage is not None:
            self.usage.feed_lines(texts)  # plain moves stay in the compiled core, as when the file was quoted
        return first

    def progress(self) -> float:
        acked = self.acked
        return acked.offset / self.file.size if acked is not None and self.file.size else 0.0

    def used(self) -> dict[str, Any]:
        """What the acknowledged lines used so far, and how far through the file they are."""
        used = self.usage.used_so_far() if self.usage is not None else {}
        used.update(lines=self.acked_lines, done_fraction=self.progress())
        self.last_used = used
        return dict(used)

    def modal_restore(self) -> list[str]:
        """What park and unpark scripts may have changed, set back as the job had it.

        Marlin's G90 also makes E absolute: a job extruding with M83 would read its next E values as
        absolute positions. The job's analyzer, fed every acknowledged line, knows the job's modes.
        """
        if self.usage is None:
            return []
        core = self.usage.core
        return [
            "G91" if core.relative else "G90",
            "M83" if core.relative_e else "M82",
            f"G1 F{core.feed * 60:.0f}",
        ]

    def result(self, outcome: str, reason: str, code: str, now: Counters) -> JobResult:
        """The job's end: the outcome, the link's cost and what the acknowledged lines used."""
        if outcome == "cancelled" and self.ending_reason:
            outcome, reason, code = "failed", self.ending_reason, "firmware-error"
        figures: dict[str, Any] = {}
        if self.usage is not None:
            u = self.usage.result()
            used = self.used()
            if outcome == "completed":  # the tail after the last command (comments) counts as done
                used["done_fraction"] = 1.0
            figures = {
                "used": used, "material_mm": u.material_mm, "material_g": u.material_g,
                "beam_on_s": u.beam_on_s, "spindle_on_s": u.spindle_on_s, "estimated_s": u.estimated_s,
            }  # fmt: skip
        return JobResult(
            outcome,
            reason,
            code,
            lines=self.acked_lines,
            bytes=now.bytes - self.start.bytes,
            seconds=now.t0 - self.start.t0,
            resends=now.resends - self.start.resends,
            errors=now.errors - self.start.errors,
            file=self.path,
            check_errors=tuple(self.check_errors),
            **figures,
        )
