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

    def pop_many(self, n: int) -> list[SentLine]:
        """`pop_oldest` up to `n` times, at once."""
        pop = self.lines.popleft
        taken = [pop() for _ in range(min(n, len(self.lines)))]
        self.bytes -= sum(len(x.wire) for x in taken)
        return taken

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
