"""Filament counted the way slicers count it, one command at a time.

Positive extrusion counts; the refill after a retraction does not (it pushes back what the retraction
pulled). Extrusion mode follows Marlin: G90/G91 set every axis including E, M82/M83 set E alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .lexer import Command

MOVES = frozenset({"G0", "G1", "G2", "G3"})


@dataclass
class ToolMaterial:
    """One extruder's account: what it pushed, and how much retraction is still to be refilled."""

    extruded_mm: float = 0.0  # as slicers count it
    pushed_mm: float = 0.0  # what the extruder really moves: the same, times the flow (M221)
    debt_mm: float = 0.0
    e_pos: float = 0.0
    flow: float = 1.0


@dataclass
class MaterialCounter:
    """Feeds on lexed commands; `declared` is False until the file says M82/M83/G90/G91."""

    tools: dict[int, ToolMaterial] = field(default_factory=lambda: {0: ToolMaterial()})
    tool: int = 0
    relative_e: bool = False
    declared: bool = False
    # evidence for files that never declare the mode (Kiri:Moto writes relative E without M83)
    _rel_total: float = 0.0
    _rel_pushed: float = 0.0
    _rel_debt: float = 0.0
    _abs_backsteps: int = 0
    _e_moves: int = 0

    last_delta: float = 0.0  # the signed filament move of the last command, for the planner

    def feed(self, cmd: Command) -> float:
        """Account one command; returns the filament (mm) it pushed, for per-line use while streaming."""
        self.last_delta = 0.0
        name = cmd.name
        if name in MOVES or (not name and "E" in cmd.params):
            return self._move(cmd)
        for code in (name, *cmd.also):
            self._modal(code, cmd)
        return 0.0

    def _modal(self, code: str, cmd: Command) -> None:
        if code in ("M82", "M83"):
            self.relative_e, self.declared = code == "M83", True
        elif code in ("G90", "G91"):  # Marlin: sets E too, but says nothing of what the slicer meant
            self.relative_e = code == "G91"
        elif code == "G92":
            e = cmd.params.get("E")
            if e is not None or not cmd.params:
                self.current.e_pos = e or 0.0
        elif code[:1] == "T" and code[1:].isdigit():
            self.tool = int(code[1:])
            self.tools.setdefault(self.tool, ToolMaterial())
        elif code == "M221" and cmd.params.get("S") is not None:
            tool = int(cmd.params["T"]) if cmd.params.get("T") is not None else self.tool
            self.tools.setdefault(tool, ToolMaterial()).flow = max(cmd.params["S"], 0.0) / 100.0

    @property
    def current(self) -> ToolMaterial:
        return self.tools[self.tool]

    def _move(self, cmd: Command) -> float:
        e = cmd.params.get("E")
        if e is None:
            return 0.0
        t = self.current
        self._e_moves += 1
        rel_counted, self._rel_debt = _refill(e, self._rel_debt)
        self._rel_total += rel_counted
        self._rel_pushed += rel_counted * t.flow
        if self.relative_e:
            delta = e
        else:
            delta = e - t.e_pos
            if delta <= 0 < e:  # read as absolute, a positive E that extrudes nothing
                self._abs_backsteps += 1
            t.e_pos = e
        counted, t.debt_mm = _refill(delta, t.debt_mm)
        t.extruded_mm += counted
        t.pushed_mm += counted * t.flow
        undeclared_relative = not self.declared and self._abs_backsteps > 0.3 * self._e_moves > 6
        self.last_delta = e if undeclared_relative else delta
        return counted * t.flow

    def relative_inferred(self) -> bool:
        """An undeclared file whose positive E values mostly fail to advance E is relative, not absolute."""
        return not self.declared and self._e_moves > 20 and self._abs_backsteps > 0.3 * self._e_moves

    def per_tool_mm(self, pushed: bool = False) -> dict[int, float]:
        """Filament per tool as slicers count it, or (`pushed`) as the extruder moves it, flow included."""
        if self.relative_inferred():
            return {0: self._rel_pushed if pushed else self._rel_total}
        return {
            k: (v.pushed_mm if pushed else v.extruded_mm)
            for k, v in sorted(self.tools.items())
            if v.extruded_mm or k == 0
        }

    def pushed_mm(self) -> float:
        return sum(self.per_tool_mm(pushed=True).values())

    def total_mm(self) -> float:
        return sum(self.per_tool_mm().values())

    def snapshot(self) -> tuple[float, float]:
        """Totals so far under both readings of an undeclared file, to subtract from the end totals."""
        return sum(t.extruded_mm for t in self.tools.values()), self._rel_total

    def total_since(self, snap: tuple[float, float]) -> float:
        return self.total_mm() - (snap[1] if self.relative_inferred() else snap[0])

    def started(self) -> bool:
        return self._e_moves > 0


def _refill(delta: float, debt: float) -> tuple[float, float]:
    """(filament counted, retraction still to refill) after an E move of `delta` with `debt` owed."""
    if delta >= 0:
        return max(delta - debt, 0.0), max(debt - delta, 0.0)
    return 0.0, debt - delta


def grams(mm: float, diameter_mm: float, density_g_cm3: float) -> float:
    """Mass of a filament length: length × cross-section × density."""
    return mm * math.pi * (diameter_mm / 2) ** 2 * density_g_cm3 / 1000.0
