"""A job file read line by line from disk, so a 200 MB file costs no more memory than a 2 MB one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..gcode.lexer import comment_text, wire_text


class JobError(ValueError):
    """A job file that cannot be streamed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class JobPos:
    """Where a command came from: its line in the file, and the file offset just after it."""

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

    def next_command(self) -> tuple[str, JobPos] | None:
        """The next command to send, or None at the end of the file."""
        got = self.read_commands(1)
        return (got[0][0], got[0][1]) if got else None

    def read_commands(self, n: int) -> list[tuple[str, JobPos, str]]:
        """Up to `n` commands (fewer at the end of the file), each with its position and its note (the
        comment on or just before it): the machine thread reads a burst's worth in one call. A command
        too long for the firmware raises JobError once the ones before it have been returned."""
        out: list[tuple[str, JobPos, str]] = []
        readline, parens, max_line = self._f.readline, self.parens, self.max_line
        while len(out) < n and not self.done and not self._too_long:
            raw = readline()
            if not raw:
                self.done = True
                break
            self.line_no += 1
            self.offset += len(raw)
            decoded = raw.decode("utf-8", "replace")
            if b";" in raw or b"(" in raw or b"%" in raw:
                text = wire_text(decoded, parens=parens)
                said = comment_text(decoded, parens)
            else:  # most lines of a job: nothing to cut (the lexer's rules, without their cost per line)
                text, said = decoded.strip(), ""
            if not text:
                self._comment = said or self._comment
                continue
            self.note, self._comment = said or self._comment, ""
            if text[:4].upper() == "M117":
                self._comment = text[4:].strip()
            if len(text) > max_line:
                self._too_long = (
                    f"{self.path}:{self.line_no}: command is {len(text)} characters, "
                    f"longer than the firmware's {max_line}"
                )
                break
            self.commands += 1
            out.append((text, JobPos(self.line_no, self.offset), self.note))
        if self._too_long and not out:
            raise JobError(self._too_long)
        return out

    def close(self) -> None:
        self._f.close()
