"""Filament counted the way slicers count it, one command at a time.

Positive extrusion counts; the refill after a retraction does not (it pushes back what the retraction
pulled). Extrusion mode follows Marlin: G90/G91 set every axis including E, M82/M83 set E alone.
The counting itself (`extrude`) is compiled in `_core.c`, where plain move lines never leave C.
"""

from __future__ import annotations

import math

from ._core import MAX_TOOLS, Core
from .lexer import Command, tool_number

MOVES = frozenset({"G0", "G1", "G2", "G3"})


class MaterialCounter:
    """Feeds on lexed commands; the counts live in the `Core` the compiled per-line path shares.

    `core.declared` stays False until the file says M82/M83; files that never do (Kiri:Moto writes
    relative E without M83) are judged on their E values (`relative_inferred`).
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.tools_out_of_range = 0  # tool numbers beyond what the core counts (their E goes on)

    def feed(self, cmd: Command) -> float:
        """Account one command; returns the filament (mm) it pushed, for per-line use while streaming."""
        core = self.core
        core.last_delta = 0.0
        name = cmd.name
        if name in MOVES or (not name and "E" in cmd.params):
            e = cmd.params.get("E")
            return core.extrude(e) if e is not None else 0.0
        for code in (name, *cmd.also):
            self._modal(code, cmd)
        return 0.0

    def _modal(self, code: str, cmd: Command) -> None:
        core, p = self.core, cmd.params
        if code in ("M82", "M83"):
            core.relative_e, core.declared = code == "M83", True
        elif code in ("G90", "G91"):  # Marlin: sets E too, but says nothing of what the slicer meant
            core.relative_e = code == "G91"
        elif code == "G92":
            e = p.get("E")
            if e is not None or not p:
                core.set_e_pos(e or 0.0)
        elif code[:1] == "T" and code[1:].isdigit():
            self._select(int(code[1:]))
        elif code == "M221" and (s := p.get("S")) is not None:
            tool = tool_number(t) if (t := p.get("T")) is not None else core.tool
            if 0 <= tool < MAX_TOOLS:
                core.set_flow(tool, max(s, 0.0) / 100.0)
            else:
                self.tools_out_of_range += 1

    def _select(self, tool: int) -> None:
        if tool < MAX_TOOLS:
            self.core.select_tool(tool)
        else:
            self.tools_out_of_range += 1

    def set_start_debt(self, mm: float) -> None:
        """Retraction the file's start code leaves owed before the first move (Simplify3D's destring)."""
        self.core.set_debt(mm)

    def relative_inferred(self) -> bool:
        """An undeclared file whose positive E values mostly fail to advance E is relative, not absolute."""
        core = self.core
        return not core.declared and core.e_moves > 20 and core.abs_backsteps > 0.3 * core.e_moves

    def per_tool_mm(self, pushed: bool = False) -> dict[int, float]:
        """Filament per tool as slicers count it, or (`pushed`) as the extruder moves it, flow included."""
        if self.relative_inferred():
            return {0: self.core.rel_pushed if pushed else self.core.rel_total}
        return {
            tool: (pushed_mm if pushed else counted)
            for tool, counted, pushed_mm in self.core.tools()
            if counted or tool == 0
        }

    def pushed_mm(self) -> float:
        return sum(self.per_tool_mm(pushed=True).values())

    def total_mm(self) -> float:
        return sum(self.per_tool_mm().values())

    def snapshot(self) -> tuple[float, float]:
        """Totals so far under both readings of an undeclared file, to subtract from the end totals."""
        return sum(counted for _, counted, _ in self.core.tools()), self.core.rel_total

    def total_since(self, snap: tuple[float, float]) -> float:
        return self.total_mm() - (snap[1] if self.relative_inferred() else snap[0])

    def started(self) -> bool:
        return self.core.e_moves > 0


def grams(mm: float, diameter_mm: float, density_g_cm3: float) -> float:
    """Mass of a filament length: length × cross-section × density."""
    return mm * math.pi * (diameter_mm / 2) ** 2 * density_g_cm3 / 1000.0
