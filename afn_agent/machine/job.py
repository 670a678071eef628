"""A job file read a block at a time from disk, so a 200 MB file costs no more memory than a 2 MB one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..gcode.lexer import comment_text, wire_text
from ._jobfile import plain_commands

BLOCK = 1 << 16  # bytes read from the file at a time


class JobError(ValueError):
    """A job file that cannot be streamed; the message names the file and line."""


class JobPos(NamedTuple):
    """Where a command came from: its line in the file, and the file offset just after it. A tuple, so
    the compiled reader makes one per command without running a constructor."""

    line: int
    offset: int


class JobFile:
    """Yields the commands of a G-code file with their positions, lazily."""

    def __init__(self, path: str | Path, *, parens: bool = True, max_line: int = 96) -> None:
        self.path = Path(path)
        try:
            self.size = os.path.getsize(self.path)
            self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close(), the job outlives a block
        except OSError as exc:
            raise JobError(f"{self.path}: cannot open: {exc.strerror}") from exc
        self.parens = parens
        self.max_line = max_line
        self.line_no = 0
        self.offset = 0
        self.commands = 0
        self.done = False
        self.note = ""  # the comment (or M117 text) on or just before the last command read
        self._comment = ""
        self._too_long = ""  # the command that stopped the reading: raised once those before it are taken
        self._block, self._at, self._eof = b"", 0, False  # the file read a block at a time

    def next_command(self) -> tuple[str, JobPos] | None:
        """The next command to send, or None at the end of the file."""
        got = self.read_commands(1)
        return (got[0][0], got[0][1]) if got else None

    def read_commands(self, n: int) -> list[tuple[str, JobPos, str]]:
        """Up to `n` commands (fewer at the end of the file), each with its position and its note (the
        comment on or just before it): the machine thread reads a burst's worth in one call. A command
        too long for the firmware raises JobError once the ones before it have been returned."""
        out: list[tuple[str, JobPos, str]] = []
        while len(out) < n and not self.done and not self._too_long:
            if not self._comment:  # plain lines, compiled (_jobfile.c), up to the first that is not
                got, self._at, self.line_no, self.offset = plain_commands(
                    self._block, self._at, n - len(out), self.max_line, self.line_no, self.offset, JobPos
                )
                if got:
                    out += got
                    self.commands += len(got)
                    self.note = ""
                    continue
            raw = self._raw_line()
            if raw is None:
                self.done = True
                break
            self._take(raw, out)
        if self._too_long and not out:
            raise JobError(self._too_long)
        return out

    def _take(self, raw: bytes, out: list[tuple[str, JobPos, str]]) -> None:
        """One line by the lexer's rules: its comment becomes the next command's note, M117 text too."""
        self.line_no += 1
        self.offset += len(raw)
        decoded = raw.decode("utf-8", "replace")
        if b";" in raw or b"(" in raw or b"%" in raw:
            text = wire_text(decoded, parens=self.parens)
            said = comment_text(decoded, self.parens)
        else:
            text, said = decoded.strip(), ""
        if not text:
            self._comment = said or self._comment
            return
        self.note, self._comment = said or self._comment, ""
        if text[:4].upper() == "M117":
            self._comment = text[4:].strip()
        if len(text) > self.max_line:
            self._too_long = (
                f"{self.path}:{self.line_no}: command is {len(text)} characters, "
                f"longer than the firmware's {self.max_line}"
            )
            return
        self.commands += 1
        out.append((text, JobPos(self.line_no, self.offset), self.note))

    def _raw_line(self) -> bytes | None:
        """The next line with its newline (the file's last may have none); None at the end. A line
        longer than a block is gathered in pieces, joined once (not copied again for each block)."""
        parts: list[bytes] = []
        while True:
            nl = self._block.find(b"\n", self._at)
            if nl >= 0:
                parts.append(self._block[self._at : nl + 1])
                self._at = nl + 1
                return b"".join(parts)
            parts.append(self._block[self._at :])
            self._block, self._at = (b"" if self._eof else self._f.read(BLOCK)), 0
            if not self._block:
                self._eof = True
                return b"".join(parts) or None

    def close(self) -> None:
        self._f.close()
