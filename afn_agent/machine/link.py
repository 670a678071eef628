"""The serial port as the machine thread sees it: bulk reads with a wake-up pipe, locked writes.

Only the machine thread reads. Writes take a lock so an emergency stop from another thread goes out
at once, between two of the machine thread's writes, never inside one.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

import serial


class LinkLost(Exception):
    """The port went away (USB unplugged, device reset, cable pulled)."""


class SerialLink:
    """A pyserial port opened for non-blocking bulk I/O."""

    def __init__(self, port: str, baud: int, write_timeout: float = 2.0, dtr: bool | None = None) -> None:
        self.port_name = port
        self.baud = baud
        self.write_timeout = write_timeout
        self.dtr = dtr
        self._ser: serial.Serial | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.write_lock = threading.Lock()
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

    def wait(self, timeout: float) -> bytes:
        """Wait up to `timeout` for bytes or a wake-up; return whatever arrived (maybe nothing)."""
        if self._ser is None:
            raise LinkLost("port is closed")
        fd = self._ser.fileno()
        try:
            ready, _, _ = select.select([fd, self._wake_r], [], [], max(timeout, 0.0))
        except (OSError, ValueError) as exc:
            raise LinkLost(f"{self.port_name}: {exc}") from exc
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
        if fd in ready:
            return self.read()
        return b""

    def read(self) -> bytes:
        if self._ser is None:
            raise LinkLost(f"{self.port_name}: the port is closed")
        try:
            data = os.read(self._ser.fileno(), 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise LinkLost(f"{self.port_name} vanished: {exc.strerror or exc}") from exc
        if not data:
            raise LinkLost(f"{self.port_name} vanished (end of file)")
        return data

    def write(self, data: bytes) -> None:
        """Write everything, or raise LinkLost; holds the write lock for the duration."""
        if not data:
            return
        with self.write_lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        if self._ser is None:
            raise LinkLost("port is closed")
        try:
            n = self._ser.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkLost(f"{self.port_name}: write timed out ({self.write_timeout:g} s)") from exc
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(f"{self.port_name} vanished: {exc}") from exc
        self.bytes_written += n or 0

    def release(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
