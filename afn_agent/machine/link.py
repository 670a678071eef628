"""The serial port as the machine thread sees it: bulk reads with a wake-up pipe, locked writes.

Only the machine thread reads. Writes take a lock so an emergency stop from another thread goes out
at once, between two of the machine thread's writes, never inside one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import time
from dataclasses import dataclass

import serial

from ..firmware.marlin import ExpressBatch, ExpressOk
from . import _express

LINE_END_S = 0.02  # longest a half-read line is followed to its end (a GRBL status report: ~7 ms at 115200)
LINE_BYTES = 16  # a short answer ("ok N123 P15 B3"): the pause between reads of a line's rest


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What a burst of the compiled exchange did: why it ended, the batch's lines it sent, the oks it
    read (n, p, b, lines sent before it) and what they leave (the highest line answered, the highest
    out of the RX ring; -1 for none), bytes read after them for the core, and the port's failure if
    it failed (told after the core has taken what came before it)."""

    why: int
    sent: int
    oks: list[ExpressOk]
    answered: int
    received: int
    rest: bytes
    lost: str


class LinkLost(Exception):
    """The port went away (USB unplugged, device reset, cable pulled)."""


class SerialLink:
    """A pyserial port opened for non-blocking bulk I/O."""

    def __init__(self, port: str, baud: int, write_timeout: float = 2.0, dtr: bool | None = None) -> None:
        self.port_name = port
        self.baud = baud
        self.followed = False  # the last wait read a line's end as it came: when the line ended is known
        self.napped_s = 0.0  # how long the last wait's nap took (a late wake-up shows here)
        # a half-read answer's rest is slept for (one wake-up, not one per byte); off where every line
        # waits for its answer (pingpong): there the sleep's overshoot is the stream's own time
        self.sleep_for_rest = True
        self.write_timeout = write_timeout
        self.dtr = dtr
        self._ser: serial.Serial | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.write_lock = _express.WriteLock()  # also taken by the compiled exchange, around each write
        self.bytes_written = 0

    def open(self) -> None:
        try:
            ser = serial.Serial()
            ser.port = self.port_name
            ser.baudrate = self.baud
            ser.timeout = 0
            ser.write_timeout = self.write_timeout
            if self.dtr is not None:
                ser.dtr = self.dtr
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {self.port_name}: {exc}") from exc
        self._ser = ser

    @property
    def is_open(self) -> bool:
        return self._ser is not None and self._ser.is_open

    def close(self) -> None:
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
            self._ser = None

    def wake(self) -> None:
        """Interrupt a wait() from another thread."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"w")  # any byte: the pipe is only drained

    def wait(self, timeout: float, nap: float = 0.0) -> bytes:
        """Wait up to `timeout` for bytes or a wake-up; return whatever arrived (maybe nothing).

        With `nap`, first sleep that long without looking at the port (pacing.py): a wake-up ends it and
        what came meanwhile is returned at once; otherwise what came, a half line followed to its end.

        Bytes that end inside a line are followed to the line's end (up to LINE_END_S): the firmware's
        answers trickle in a few bytes at a time and the machine thread has nothing to do with half a
        line, so it turns once per line, and reads after pauses the length of a short answer rather than
        at every byte (bench/cpu.py). Urgent bytes never wait for this: their callers write them."""
        if self._ser is None:
            raise LinkLost("port is closed")
        fd, data = self._ser.fileno(), b""
        self.followed, self.napped_s = False, 0.0
        if nap > 0:
            started = time.monotonic()
            woken = not self._slept(nap)
            self.napped_s = time.monotonic() - started
            data = self.read(probe=True)
            if woken:  # a command waits for the thread's turn
                return data
        if not data:
            if not self._ready(fd, timeout):
                return b""
            data = self.read()
        return data if not data or data.endswith(b"\n") else self._follow(fd, data, timeout)

    def express(self, batch: ExpressBatch, seconds: float) -> Exchanged:
        """Up to `seconds` of the compiled exchange (_express.c): the batch's lines written as the window
        allows, plain oks read, until the batch is out, a wake-up, or any other line."""
        if self._ser is None:
            raise LinkLost("port is closed")
        why, sent, written, oks, rest, err, answered, received = _express.exchange(
            self._ser.fileno(), self._wake_r, self.write_lock, batch.wires, batch.oldest, batch.win_start,
            batch.next_seq, batch.sizes, batch.limit, batch.depth, seconds, self.write_timeout,
        )  # fmt: skip
        self.bytes_written += written
        lost = ""
        if why == _express.LOST and err == errno.ETIMEDOUT:
            lost = f"{self.port_name}: write timed out ({self.write_timeout:g} s)"
        elif why == _express.LOST:
            lost = f"{self.port_name} vanished: {os.strerror(err) if err else 'end of file'}"
        return Exchanged(why, sent, oks, answered, received, rest, lost)

    def _follow(self, fd: int, data: bytes, timeout: float) -> bytes:
        """The rest of a line whose start was read (`followed`: the line's end was read as it came)."""
        self.followed = True
        deadline = time.monotonic() + min(timeout, LINE_END_S)
        have = len(data) - (data.rfind(b"\n") + 1)  # bytes of the line under way
        if self.sleep_for_rest:
            time.sleep(max(LINE_BYTES - have, 1) * 10 / max(self.baud, 1200))  # the rest of a short answer
        parts = [data]
        while (left := deadline - time.monotonic()) > 0 and self._ready(fd, left):
            parts.append(more := self.read())  # a longer line: from here, woken as its bytes come
            if more.endswith(b"\n"):
                break
        return b"".join(parts)

    def _slept(self, seconds: float) -> bool:
        """Sleep unless woken; False when a wake-up cut it short (the pipe is drained)."""
        try:
            woken, _, _ = select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError) as exc:
            raise LinkLost(f"{self.port_name}: {exc}") from exc
        if woken:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
        return not woken

    def _ready(self, fd: int, timeout: float) -> bool:
        """Whether the port has bytes; False on timeout or a wake-up (the pipe is drained)."""
        try:
            ready, _, _ = select.select([fd, self._wake_r], [], [], max(timeout, 0.0))
        except (OSError, ValueError) as exc:
            raise LinkLost(f"{self.port_name}: {exc}") from exc
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
            return False
        return fd in ready

    def read(self, probe: bool = False) -> bytes:
        """What the port holds. A raw tty answers "nothing yet" and "hung up" alike (0 bytes): only a read
        that select found ready (`probe` False) takes 0 bytes for the port's end."""
        if self._ser is None:
            raise LinkLost(f"{self.port_name}: the port is closed")
        try:
            data = os.read(self._ser.fileno(), 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise LinkLost(f"{self.port_name} vanished: {exc.strerror or exc}") from exc
        if not data and not probe:
            raise LinkLost(f"{self.port_name} vanished (end of file)")
        return data

    def write(self, data: bytes) -> None:
        """Write everything, or raise LinkLost; holds the write lock for the duration."""
        if not data:
            return
        with self.write_lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        """os.write on the non-blocking port, waiting for room when it is full (up to write_timeout):
        what pyserial's write does, without its per-call Python (a line's bytes, several times a ms)."""
        if self._ser is None:
            raise LinkLost("port is closed")
        fd, view, deadline = self._ser.fileno(), memoryview(data), 0.0
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise LinkLost(f"{self.port_name} vanished: {exc.strerror or exc}") from exc
            self.bytes_written += n
            view = view[n:]
            if not view:
                return
            deadline = deadline or time.monotonic() + self.write_timeout
            if (left := deadline - time.monotonic()) <= 0:
                raise LinkLost(f"{self.port_name}: write timed out ({self.write_timeout:g} s)")
            try:
                select.select([], [fd], [], left)
            except (OSError, ValueError) as exc:
                raise LinkLost(f"{self.port_name}: {exc}") from exc

    def release(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
