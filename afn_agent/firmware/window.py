"""The flow-control window shared by the cores: what has been sent and not yet acknowledged.

Counting bytes of unacknowledged lines against the firmware's RX ring is what keeps the planner fed
without ever overflowing the ring: a line's bytes are either still in the ring or already parsed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class SentLine:
    """One line on its way: its sequence (Marlin line number), command, wire bytes and caller's tag."""

    seq: int
    text: str
    wire: bytes
    tag: Any = None
    long: bool = False
    barrier: bool = False


class Window:
    """Unacknowledged lines in send order, with their byte total and a limit."""

    def __init__(self, limit_bytes: int, pingpong: bool = False) -> None:
        self.limit = limit_bytes
        self.pingpong = pingpong
        self.lines: deque[SentLine] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.lines)

    def fits(self, size: int) -> bool:
        """Would a line of `size` bytes fit now? An empty window always takes one line."""
        if not self.lines:
            return True
        if self.pingpong:
            return False
        return self.bytes + size <= self.limit

    def push(self, line: SentLine) -> None:
        self.lines.append(line)
        self.bytes += len(line.wire)

    def extend(self, lines: list[SentLine]) -> None:
        """`push` for each, at once (a burst of the compiled exchange)."""
        self.lines.extend(lines)
        self.bytes += sum(len(x.wire) for x in lines)

    def pop_oldest(self) -> SentLine | None:
        if not self.lines:
            return None
        line = self.lines.popleft()
        self.bytes -= len(line.wire)
        return line

    def drop_from(self, seq: int) -> list[SentLine]:
        """Remove every line with sequence >= seq (the firmware discarded them); return them in order."""
        kept: deque[SentLine] = deque()
        dropped: list[SentLine] = []
        for line in self.lines:
            (dropped if line.seq >= seq else kept).append(line)
        self.lines = kept
        self.bytes = sum(len(x.wire) for x in kept)
        return dropped

    def clear(self) -> list[SentLine]:
        lines = list(self.lines)
        self.lines.clear()
        self.bytes = 0
        return lines

    def oldest(self) -> SentLine | None:
        return self.lines[0] if self.lines else None


@dataclass(slots=True)
class _Burst:
    """Lines `seq` on of a burst of the compiled exchange, as its lists hold them from `start`."""

    seq: int
    texts: list[str]
    wires: list[bytes]
    tags: list[Any]
    start: int
    stop: int


class History:
    """The last `size` lines sent, for a resend. A burst of the compiled exchange is kept as its lists
    and made SentLines only when a resend reaches back into it: most bursts never are."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._parts: deque[SentLine | _Burst] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._parts.clear()
        self._count = 0

    def append(self, line: SentLine) -> None:
        self._parts.append(line)
        self._count += 1
        self._trim()

    def extend(self, lines: list[SentLine]) -> None:
        for line in lines:
            self.append(line)

    def extend_burst(self, seq: int, texts: list[str], wires: list[bytes], tags: list[Any], n: int) -> None:
        """The first `n` lines of a burst, numbered from `seq` (plain moves: neither long nor barriers)."""
        if n:
            self._parts.append(_Burst(seq, texts, wires, tags, 0, n))
            self._count += n
            self._trim()

    def first_seq(self) -> int:
        part = self._parts[0]
        return part.seq

    def last_text(self) -> str:
        part = self._parts[-1]
        return part.text if isinstance(part, SentLine) else part.texts[part.stop - 1]

    def since(self, seq: int) -> list[SentLine]:
        """The lines from `seq` on; the bursts among them become SentLines for good, so a line resent
        twice is the same object both times."""
        parts: deque[SentLine | _Burst] = deque()
        for part in self._parts:
            if isinstance(part, SentLine):
                parts.append(part)
                continue
            for i in range(part.start, part.stop):
                parts.append(SentLine(part.seq + i - part.start, part.texts[i], part.wires[i], part.tags[i]))
        self._parts = parts
        return [x for x in parts if isinstance(x, SentLine) and x.seq >= seq]

    def _trim(self) -> None:
        while self._count > self.size:
            part = self._parts[0]
            if isinstance(part, SentLine) or part.stop - part.start <= self._count - self.size:
                self._parts.popleft()
                self._count -= 1 if isinstance(part, SentLine) else part.stop - part.start
            else:
                cut = self._count - self.size
                part.start += cut
                part.seq += cut
                self._count -= cut
