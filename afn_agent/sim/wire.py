"""One direction of a UART, paced at the baud rate with a fixed latency, and the pty it runs on.

The simulator reads what the host wrote as soon as it can, then lets each byte `arrive` only when
a real 8N1 line at that baud (plus the adapter's latency) would have delivered it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tty
from collections import deque
from pathlib import Path
from typing import Any

BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit


class Wire:
    """Bytes in flight on one direction of the link, with their arrival times."""

    def __init__(self, baud: int, latency_s: float = 0.0) -> None:
        self.byte_time = BITS_PER_BYTE / baud
        self.latency = latency_s
        self.free_at = 0.0
        self._chunks: deque[list[Any]] = deque()  # [start_time, data, delivered]
        self.busy_time = 0.0

    def push(self, data: bytes, t: float) -> None:
        """Put bytes on the line at time t; they go out back to back after what is already queued."""
        if not data:
            return
        start = max(t, self.free_at)
        self._chunks.append([start, data, 0])
        self.free_at = start + len(data) * self.byte_time
        self.busy_time += len(data) * self.byte_time

    def next_arrival(self) -> float:
        """When the next byte completes its trip, or infinity."""
        if not self._chunks:
            return float("inf")
        start, _, done = self._chunks[0]
        return float(start + (done + 1) * self.byte_time + self.latency)

    def next_arrival_of(self, wakes: re.Pattern[bytes]) -> float:
        """When the next byte matching `wakes` completes its trip, or infinity: the simulator need not
        wake for the bytes between (it takes them later, each at its own time)."""
        for start, data, done in self._chunks:
            if (m := wakes.search(data, done)) is not None:
                return float(start + (m.start() + 1) * self.byte_time + self.latency)
        return float("inf")

    def take_one(self) -> tuple[int, float]:
        """Pop the next byte with its arrival time (call only when next_arrival() is finite)."""
        chunk = self._chunks[0]
        start, data, done = chunk
        t = start + (done + 1) * self.byte_time + self.latency
        chunk[2] = done + 1
        if chunk[2] >= len(data):
            self._chunks.popleft()
        return data[done], t

    def take_until(self, t: float) -> bytes:
        """Every byte that has arrived by time t."""
        out = bytearray()
        while self._chunks:
            chunk = self._chunks[0]
            start, data, done = chunk
            n = int((t - self.latency - start) / self.byte_time + 1e-9)
            n = min(n, len(data))
            if n <= done:
                break
            out += data[done:n]
            chunk[2] = n
            if n >= len(data):
                self._chunks.popleft()
            else:
                break
        return bytes(out)

    def clear(self) -> None:
        self._chunks.clear()

    def pending(self) -> int:
        return sum(len(d) - done for _, d, done in self._chunks)


class PtyLink:
    """A pseudo-terminal whose far end is published as a symlink, as a USB port would appear."""

    def __init__(self, link_path: str | Path) -> None:
        self.link_path = Path(link_path)
        self.master = -1
        self._slave = -1

    def open(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        name = os.ttyname(slave)
        tmp = self.link_path.with_name(self.link_path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        os.replace(tmp, self.link_path)
        return name

    def read(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""

    def write(self, data: bytes) -> int:
        """Write what the host side can take now; returns the bytes lost (nobody reading, buffer full).

        A real UART whose far end is not listening loses bytes too; waiting here instead would stall
        the simulator (and its stop signal) for as long as the host keeps the port closed.
        """
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except (BlockingIOError, OSError):
                return len(view)
            view = view[n:]
        return 0

    def unplug(self) -> None:
        """Vanish like a USB device: the host's reads and writes start failing."""
        for fd in (self.master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()

    def close(self) -> None:
        self.unplug()
