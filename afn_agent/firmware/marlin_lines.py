"""What Marlin-family firmwares print, recognised: the patterns and markers the Marlin core reads.

Kept apart from the state machine (`marlin.py`) so the protocol's logic reads without the regexes.
"""

from __future__ import annotations

import re

ESTOP = b"M112\n"
BREAK_WAITS = b"M108\nM410\n"  # through the emergency parser: end a heating wait, drop planned moves
CORRUPT_MARKERS = ("checksum mismatch", "no checksum")  # the line arrived damaged (not out of order)
FAULT_MARKERS = (
    "kill() called",
    "thermal runaway",
    "maxtemp",
    "mintemp",
    "heating failed",
    "fatal",
    "printer halted",
    "stopped due to errors",
    "emergency stop",
)
LINE_ERROR_MARKERS = (
    "checksum mismatch",
    "line number is not",
    "no checksum",
    "no line number",
    "format error",
)
RESEND_RE = re.compile(r"^(?:resend|rs)\s*:?\s*n?:?\s*(\d+)", re.I)
ADVANCED_OK_RE = re.compile(r"\bN(\d+)\s+P(\d+)\s+B(\d+)")
PLAIN_OK_RE = re.compile(rb"ok N(\d+) P(\d+) B(\d+)[\r\x00 ]*")  # ADVANCED_OK's answer, as bytes
UNNUMBERED_OK_RE = re.compile(r"^ok\s+P(\d+)\s+B(\d+)")  # ADVANCED_OK answering a line without N
TEMP_RE = re.compile(r"(?<![\w@])(T\d*|B|C|P|A)\s*:\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(-?\d+(?:\.\d+)?))?")
POS_RE = re.compile(r"\b([XYZEABC])\s*:\s*(-?\d+(?:\.\d+)?)")
UNKNOWN_RE = re.compile(r'unknown command:\s*"?([^"]*)"?', re.I)
CAP_RE = re.compile(r"^Cap:([A-Z0-9_]+):([01])")


def squeeze(text: str) -> str:
    """A command compared as Marlin may echo it: without spaces, upper case."""
    return "".join(text.split()).upper()


def position(line: str) -> dict[str, float]:
    """Axes of an M114 report (the part before `Count`, which is in steps)."""
    head = re.split(r"\bCount\b", line, maxsplit=1, flags=re.I)[0]
    return {k: float(v) for k, v in POS_RE.findall(head)}


def fault_code(low: str) -> str:
    """The reason code of a fatal firmware message (lower-cased)."""
    for marker, code in (
        ("thermal runaway", "thermal-runaway"),
        ("maxtemp", "maxtemp"),
        ("mintemp", "mintemp"),
        ("heating failed", "heating-failed"),
        ("kill() called", "killed"),
        ("printer halted", "killed"),
    ):
        if marker in low:
            return code
    return "firmware-fault"
