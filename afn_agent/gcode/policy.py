"""What a member's file may not ask of a machine: commands the profile forbids, and unknown ones.

A profile lists patterns: `M500` (the command), `G10 L2` (the command with that word), `$=` (any GRBL
setting write), `$RST` (a GRBL system command by its start), `M98 P"config.g"` (text the command carries).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lexer import NONFINITE, Command

MARLIN_KNOWN = frozenset(
    "G0 G1 G2 G3 G4 G5 G10 G11 G12 G17 G18 G19 G20 G21 G26 G27 G28 G29 G30 G31 G32 G33 G34 G35 G38.2 G38.3 "
    "G42 G53 G54 G55 G56 G57 G58 G59 G60 G61 G76 G80 G90 G91 G92 G425 M0 M1 M3 M4 M5 M7 M8 M9 M10 M11 "
    "M16 M17 M18 M20 M21 M22 M23 M24 M25 M26 M27 M28 M29 M30 M31 M32 M33 M34 M42 M43 M48 M73 M75 M76 M77 "
    "M78 M80 M81 M82 M83 M84 M85 M92 M100 M104 M105 M106 M107 M108 M109 M110 M111 M112 M113 M114 M115 "
    "M117 M118 M119 M120 M121 M122 M123 M125 M126 M127 M128 M129 M140 M141 M143 M145 M149 M150 M154 M155 "
    "M163 M164 M165 M166 M190 M191 M192 M193 M200 M201 M203 M204 M205 M206 M207 M208 M209 M211 M217 M218 "
    "M220 M221 M226 M240 M250 M255 M256 M260 M261 M280 M281 M282 M290 M300 M301 M302 M303 M304 M305 M350 "
    "M351 M355 M360 M361 M362 M363 M364 M380 M381 M400 M401 M402 M403 M404 M405 M406 M407 M410 M412 M413 "
    "M420 M421 M422 M425 M428 M430 M486 M500 M501 M502 M503 M504 M510 M511 M512 M524 M540 M569 M575 M600 "
    "M603 M605 M665 M666 M672 M701 M702 M710 M7219 M851 M852 M860 M861 M862 M863 M864 M865 M866 M867 M868 "
    "M869 M871 M876 M900 M906 M907 M908 M909 M910 M911 M912 M913 M914 M915 M916 M917 M918 M919 M928 M951 "
    "M993 M994 M995 M997 M999 M862.1 M862.2 M862.3 M862.4 M862.5 M862.6 M601 M602 M1001 M1002".split()
)
GRBL_KNOWN = frozenset(
    "G0 G1 G2 G3 G4 G10 G17 G18 G19 G20 G21 G28 G28.1 G30 G30.1 G38.2 G38.3 G38.4 G38.5 G40 G43.1 G49 G53 "
    "G54 G55 G56 G57 G58 G59 G61 G80 G90 G91 G91.1 G92 G92.1 G93 G94 M0 M1 M2 M30 M3 M4 M5 M6 M7 M8 M9 M56 "
    "$".split()
)
WORD_RE = re.compile(r"^([A-Z])([-+]?\d+(?:\.\d+)?)?$")
CODE_RE = re.compile(r"^([GM])(\d+)(?:\.(\d+))?$")
# What sets a heater's target, and which heater: (command, words that carry a temperature).
HEATER_WORDS = {
    "M104": ("hotend", "SR"), "M109": ("hotend", "SR"), "M568": ("hotend", "SR"),
    "M140": ("bed", "SR"), "M190": ("bed", "SR"),
    "M141": ("chamber", "SR"), "M191": ("chamber", "SR"),
}  # fmt: skip
KLIPPER_HEATERS = {"EXTRUDER": "hotend", "HEATER_BED": "bed", "CHAMBER": "chamber"}
# Where slicers state the filament: PrusaSlicer, SuperSlicer, OrcaSlicer, BambuStudio; Simplify3D.
MATERIAL_RE = re.compile(r"^;\s*(?:filament_type\s*=|printMaterial,)\s*(.+)$", re.IGNORECASE)


Code = tuple[str, int, int | None]  # `M502.1` -> ("M", 502, 1)


def code_of(name: str) -> Code | None:
    """`M502.1` -> ("M", 502, 1): firmware dispatches on the number, the subcode is an argument to it."""
    m = CODE_RE.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2)), None if m.group(3) is None else int(m.group(3))


@dataclass(frozen=True)
class Rule:
    """One forbidden pattern, parsed once. `M502` forbids every subcode of it (`M502.1`); `G38.2` only
    that one. A word with a value must hold that value; a word without one (`M42 I`) must only be there."""

    pattern: str
    name: str
    words: tuple[tuple[str, float | None], ...] = ()
    text: str = ""
    code: Code | None = None  # `name` as a number (None for `$` and named commands)

    def matches(self, cmd: Command, codes: tuple[Code | None, ...]) -> bool:
        """`codes`: the command's names (`cmd.name`, then `cmd.also`) as numbers, parsed once per command."""
        names = (cmd.name, *cmd.also)
        if not any(self._same_code(n, c) for n, c in zip(names, codes, strict=True)):
            return False
        if self.name == "$":
            rest = cmd.text.upper()
            return "=" in rest if self.text == "=" else rest.startswith(self.text)
        for letter, value in self.words:
            if letter not in cmd.params or (value is not None and cmd.params[letter] != value):
                return False
        return self.text.lower() in cmd.text.lower() if self.text else True

    def _same_code(self, name: str, code: Code | None) -> bool:
        if name == self.name:
            return True
        mine = self.code
        if mine is None or code is None or mine[:2] != code[:2]:
            return False
        return mine[2] is None or mine[2] == code[2]


def parse_rule(pattern: str) -> Rule:
    head, _, rest = pattern.strip().partition(" ")
    if head.startswith("$"):
        return Rule(pattern, "$", (), head[1:].upper() or rest.upper())
    words: list[tuple[str, float | None]] = []
    text = []
    for token in rest.split():
        m = WORD_RE.match(token.upper())
        if m:
            words.append((m.group(1), None if m.group(2) is None else float(m.group(2))))
        else:
            text.append(token.strip('"').split('"')[-1] if '"' in token else token)
    code = code_of(head.upper())
    name = head.upper()
    if code is not None:  # `M0502` is M502
        name = f"{code[0]}{code[1]}" + ("" if code[2] is None else f".{code[2]}")
    return Rule(pattern, name, tuple(words), " ".join(t for t in text if t), code)


@dataclass(frozen=True)
class Violation:
    line: int
    pattern: str
    command: str


class Policy:
    """Checks commands against the forbidden patterns and the heaters' limits; refuses numbers that are not
    finite (Marlin reads `Xinf` as infinity); counts commands the firmware would not know."""

    def __init__(
        self,
        forbidden: tuple[str, ...] = (),
        protocol: str = "marlin",
        max_temp_c: dict[str, float] | None = None,
        material_max_c: dict[str, float] | None = None,
    ) -> None:
        self.rules = [parse_rule(p) for p in forbidden]
        self.names = frozenset(rule.name for rule in self.rules)
        self.known = GRBL_KNOWN if protocol == "grbl" else MARLIN_KNOWN
        self.max_temp_c = dict(max_temp_c or {})
        self.material_max_c = {k.upper(): v for k, v in (material_max_c or {}).items()}
        self.materials: set[str] = set()  # filament types the file says it is for
        self.hottest: Violation | None = None  # the highest hotend target, as (line, °C, command)
        self._hottest_c = 0.0
        self.violations: list[Violation] = []
        self.unknown = 0
        self.unknown_names: dict[str, int] = {}

    def check(self, cmd: Command, raw: str = "") -> None:
        shown = (raw or cmd.name).strip()[:80]
        if cmd.flags & NONFINITE:
            self.violations.append(Violation(cmd.line, "non-finite number", shown))
        else:
            codes = tuple(code_of(n) for n in (cmd.name, *cmd.also))
            for rule in self.rules:
                if rule.matches(cmd, codes):
                    self.violations.append(Violation(cmd.line, rule.pattern, shown))
                    break
            else:
                self._check_heat(cmd, shown)
        if cmd.name and cmd.name not in self.known and not cmd.name.startswith("T"):
            self.unknown += 1
            if len(self.unknown_names) < 100 or cmd.name in self.unknown_names:
                self.unknown_names[cmd.name] = self.unknown_names.get(cmd.name, 0) + 1

    def note_comment(self, comment: str) -> None:
        """`; filament_type = PLA` (or `PLA;PETG`): the file's filament, for `material_max_c`."""
        if self.material_max_c and (m := MATERIAL_RE.match(comment)):
            self.materials.update(x.strip().upper() for x in m.group(1).split(";") if x.strip())

    def all_violations(self) -> list[Violation]:
        """The violations, with the heat check against the filament the file declares (slicers write it
        at the end as often as at the start, so it is made once the whole file is read)."""
        limits = [self.material_max_c[m] for m in self.materials if m in self.material_max_c]
        if not limits or self.hottest is None or self._hottest_c <= max(limits):
            return list(self.violations)
        names = "/".join(sorted(m for m in self.materials if m in self.material_max_c))
        rule = f"hotend above {max(limits):g} °C for {names}"
        return [*self.violations, Violation(self.hottest.line, rule, self.hottest.command)]

    def _check_heat(self, cmd: Command, shown: str) -> None:
        """A target above the profile's limit for that heater (`max_temp_c`) is refused, not clamped."""
        if not self.max_temp_c and not self.material_max_c:
            return
        heater, words = HEATER_WORDS.get(cmd.name, (None, ""))
        values = [cmd.params.get(w) for w in words]
        if cmd.name == "SET_HEATER_TEMPERATURE":
            which = cmd.text.upper().partition("HEATER=")[2].split(" ")[0]
            heater = "hotend" if which.startswith("EXTRUDER") else KLIPPER_HEATERS.get(which)
            values = [cmd.params.get("TARGET")]
        if heater == "hotend":
            for value in values:
                if value is not None and value > self._hottest_c:
                    self._hottest_c, self.hottest = value, Violation(cmd.line, "", shown)
        limit = self.max_temp_c.get(heater or "")
        if limit is None:
            return
        for value in values:
            if value is not None and value > limit:
                self.violations.append(Violation(cmd.line, f"{heater} above {limit:g} °C", shown))
                return
