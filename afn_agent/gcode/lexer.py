"""G-code lexing that real files do not break: slicer, CAM, Klipper and vendor dialects alike.

One line in, one `Command` (or None for a blank/comment line) out. Nothing raises on odd input:
what cannot be read becomes a diagnostic naming the line, and the rest of the file goes on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

PAREN_COMMENT = re.compile(r"\([^)]*\)?")
WORD = re.compile(r"([A-Za-z])\s*([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+))?")
CLASSIC = re.compile(r"^([GMTgmt])\s*(\d+(?:\.\d+)?)")
EXTENDED_ARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\"[^\"]*\"|\S*)")
TEXT_COMMANDS = frozenset({"M117", "M118", "M23", "M28", "M32", "M36", "M98", "M486"})
WORDS_ONLY = re.compile(r"^[A-FH-LO-SU-Za-fh-lo-su-z]\s*[-+.\d]")

COMMA_DECIMAL = 1  # a number written with a decimal comma (read as a point)
UNREAD = 2  # characters that are not G-code words were skipped
NONFINITE = 4  # a word reads as infinity or not-a-number to the firmware's strtod (`Xinf`, `S nan`)
NONFINITE_RE = re.compile(r"\s*[-+]?(?:inf|nan)", re.IGNORECASE)


class GcodeError(ValueError):
    """A G-code input that cannot be analysed at all (not a line-level problem); names file and line."""


@dataclass(slots=True)
class Command:
    """One command: its name (G1, M104, T0, SET_PRESSURE_ADVANCE), its words, and where it came from."""

    line: int
    name: str
    params: dict[str, float | None] = field(default_factory=dict)
    text: str = ""
    flags: int = 0
    also: tuple[str, ...] = ()  # further G/M codes on the same line (CNC: `G17 G90 G94`)

    def get(self, letter: str, default: float | None = None) -> float | None:
        value = self.params.get(letter, default)
        return default if value is None else value


def tool_number(value: float) -> int:
    """A tool number from a word's value (an absurd one, a 400-digit `T`, is -1 rather than an exception)."""
    try:
        return int(value)
    except (OverflowError, ValueError):
        return -1


def strip_comments(raw: str, parens: bool = True) -> str:
    """The part of a line that is G-code. `;` ends it except in a message command's text."""
    text = raw.strip()
    if not text or text[0] in ";%":
        return ""
    head = text[:5].upper()
    if head[:4] in ("M117", "M118"):
        return text
    cut = text.find(";")
    if cut >= 0:
        text = text[:cut]
    if parens and "(" in text:
        text = PAREN_COMMENT.sub(" ", text)
    return text.strip()


def comment_text(raw: str, parens: bool = True, limit: int = 200) -> str:
    """The words of a line's comment (`; …`, or `( … )` where parentheses are comments), by the rules
    strip_comments cuts by: a message command's text (M117) is not a comment."""
    text = raw.strip()
    if text[:4].upper() in ("M117", "M118"):
        return ""
    _, semi, after = text.partition(";")
    if semi and after.strip():
        return after.strip()[:limit]
    if parens and (m := PAREN_COMMENT.search(text)):
        return m.group(0).strip("()").strip()[:limit]
    return ""


def wire_text(raw: str, *, parens: bool = True) -> str:
    """A line as it goes on the wire: comments and blanks removed; '' if nothing is left to send."""
    text = strip_comments(raw, parens)
    if parens and "(" in raw:  # the link is the bottleneck: do not send the blanks a comment left
        text = " ".join(text.split())
    return text


def lex(raw: str, line: int = 0, parens: bool = True) -> Command | None:
    """Read one line. Blank and comment-only lines give None."""
    text = strip_comments(raw, parens)
    if not text:
        return None
    if text[0] in "Nn" and len(text) > 1 and (text[1].isdigit() or text[1] == " "):
        i = 1
        while i < len(text) and (text[i].isdigit() or text[i] == " "):
            i += 1
        text = text[i:]
        if not text:
            return None
    star = text.find("*")
    if star >= 0 and text[:4].upper() not in ("M117", "M118"):
        text = text[:star].rstrip()
        if not text:
            return None
    if text[0] == "$":  # GRBL system commands: `$H`, `$X`, `$110=500`, `$RST=*`
        return Command(line, "$", {}, text[1:].strip())
    m = CLASSIC.match(text)
    if m is None:
        if WORDS_ONLY.match(text):  # modal words alone (`S90`, `X10 Y5`): the modal command applies
            return _words("", text, line)
        return _extended(text, line)
    name = _code(m.group(1), m.group(2))
    rest = text[m.end() :]
    if name in TEXT_COMMANDS:
        return Command(line, name, {}, rest.strip())
    return _words(name, rest, line)


def _code(letter: str, number: str) -> str:
    """`G01` -> `G1`, `m3` -> `M3`, `G92.1` stays, `G.2` -> `G0.2`."""
    value = float(number)
    return f"{letter.upper()}{int(value) if value.is_integer() else format(value, 'g')}"


QUOTED = re.compile(r'"[^"]*"?')


def _words(name: str, rest: str, line: int) -> Command:
    params: dict[str, float | None] = {}
    also: list[str] = []
    flags = 0
    pos = 0
    text = ""
    if '"' in rest:  # quoted strings (`M862.3 P "MK3S"`, RRF file names) are text, not words
        text = " ".join(QUOTED.findall(rest))
        rest = QUOTED.sub(" ", rest)
    for m in WORD.finditer(rest):
        if m.start() != pos and rest[pos : m.start()].strip():
            flags |= UNREAD
        pos = m.end()
        letter, value = m.group(1).upper(), m.group(2)
        if value is None:
            params[letter] = None
            if NONFINITE_RE.match(rest, m.end()):
                flags |= NONFINITE
            continue
        if letter in "GM" and name[:1] in ("G", "M", "") and "," not in value:
            also.append(_code(letter, value))
            continue
        if "," in value:
            value = value.replace(",", ".")
            flags |= COMMA_DECIMAL
        try:
            params[letter] = float(value)
        except ValueError:
            params[letter] = None
            flags |= UNREAD
    if rest[pos:].strip():
        flags |= UNREAD
    if not name and also:
        name, also = also[0], also[1:]
    return Command(line, name, params, text, flags, tuple(also))


def _extended(text: str, line: int) -> Command:
    """Klipper-style commands and macros (`SET_FAN_SPEED FAN=x SPEED=1`, `print_start`), or unknown text."""
    head, _, args = text.partition(" ")
    name = head.upper()
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
        return Command(line, name, {}, text, UNREAD)
    params: dict[str, float | None] = {}
    flags = 0
    for key, value in EXTENDED_ARG.findall(args):
        try:
            number = float(value)
        except ValueError:
            params[key.upper()] = None
            continue
        if not math.isfinite(number):
            flags |= NONFINITE
        params[key.upper()] = number
    return Command(line, name, params, args.strip(), flags)
