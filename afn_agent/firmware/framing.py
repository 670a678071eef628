"""Line framing shared by the Marlin core and the Marlin simulator: `N<n> <cmd>*<xor>`."""

from __future__ import annotations


def checksum(payload: bytes) -> int:
    """XOR of every byte, as RepRap firmwares compute it."""
    cs = 0
    for b in payload:
        cs ^= b
    return cs


def frame(seq: int, command: str) -> bytes:
    """`N<seq> <command>*<checksum>\\n` as bytes."""
    payload = f"N{seq} {command}".encode("ascii", "replace")
    return payload + b"*" + str(checksum(payload)).encode() + b"\n"


def plain(command: str) -> bytes:
    """An unnumbered line, for firmwares that take no line numbers."""
    return command.encode("ascii", "replace") + b"\n"


def command_word(text: str) -> str:
    """The first word of a command, upper-cased: `g1 x1` -> `G1`, `M104 S200` -> `M104`."""
    words = text.split(None, 1)
    return words[0].upper() if words else ""
