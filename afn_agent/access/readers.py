"""Badge readers behind one small interface: `open()`, `read(timeout) -> [uid, ...]`, `close()`.

Decoding is sans-I/O (bytes in, UIDs out) so it is tested on recorded bytes; the readers only move
bytes. `ReaderLoop` adds what every reader needs: debounce, and re-opening a reader that went away.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import serial

EV_KEY = 1
KEY_PRESS = 1
EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit Linux: timeval, type, code, value
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int): keystrokes go to us only, not to the console
KEYS = {2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0",
        30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F",
        71: "7", 72: "8", 73: "9", 75: "4", 76: "5", 77: "6", 79: "1", 80: "2", 81: "3", 82: "0"}  # fmt: skip
ENTER = (28, 96)  # KEY_ENTER, KEY_KPENTER
MAX_UID = 32


log = logging.getLogger("afn_agent.access")


class Reader(Protocol):
    name: str

    def open(self) -> None: ...
    def read(self, timeout: float) -> list[str]: ...
    def close(self) -> None: ...


class KeyDecoder:
    """USB HID readers type the UID as key presses ending with Enter."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        data, out = self.partial + data, []
        whole = len(data) - len(data) % EVENT.size
        self.partial = data[whole:]
        for offset in range(0, whole, EVENT.size):
            _, _, etype, code, value = EVENT.unpack_from(data, offset)
            if etype != EV_KEY or value != KEY_PRESS:
                continue
            if code in ENTER:
                if self.buf:
                    out.append("".join(self.buf))
                self.buf = []
            elif code in KEYS and len(self.buf) < MAX_UID:
                self.buf.append(KEYS[code])
        return out


class Em4100Decoder:
    """125 kHz modules (RDM6300 and kin): STX, 10 hex digits, 2 hex checksum, ETX; or a plain line.

    A framed read with a bad checksum is dropped (a half-read card), never guessed at.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        out: list[str] = []
        while True:
            if self.buf[:1] == b"\x02":
                end = self.buf.find(b"\x03")
                if end < 0:
                    if len(self.buf) > 64:
                        self.buf.clear()
                    return out
                frame, self.buf = bytes(self.buf[1:end]).strip(), self.buf[end + 1 :]
                uid = self._framed(frame)
                if uid:
                    out.append(uid)
                continue
            nl = min(
                (i for i in (self.buf.find(b"\n"), self.buf.find(b"\r"), self.buf.find(b"\x02")) if i >= 0),
                default=-1,
            )
            if nl < 0:
                if len(self.buf) > 64:
                    self.buf.clear()
                return out
            line, self.buf = bytes(self.buf[:nl]).strip(), self.buf[nl + (0 if self.buf[nl] == 2 else 1) :]
            text = line.decode("ascii", "replace")
            if text and all(c in "0123456789ABCDEFabcdef" for c in text) and len(text) <= MAX_UID:
                out.append(text.upper())

    def _framed(self, frame: bytes) -> str | None:
        try:
            raw = bytes.fromhex(frame.decode("ascii"))
        except ValueError:
            self.bad_frames += 1
            return None
        if len(raw) != 6:
            self.bad_frames += 1
            return None
        check = 0
        for b in raw[:5]:
            check ^= b
        if check != raw[5]:
            self.bad_frames += 1
            return None
        return raw[:5].hex().upper()


class EvdevReader:
    """A USB reader that acts as a keyboard, read from /dev/input/eventN and grabbed."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.path = path
        self.fd = -1
        self.decoder = KeyDecoder()

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.ioctl(self.fd, EVIOCGRAB, 1)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise

    def read(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, EVENT.size * 64)
        if not data:
            raise OSError("reader gone")
        return self.decoder.feed(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class UartReader:
    """A 125 kHz module on a serial port (9600 baud by default)."""

    def __init__(self, port: str, baud: int = 9600) -> None:
        self.name = port
        self.port, self.baud = port, baud
        self.serial: serial.Serial | None = None
        self.decoder = Em4100Decoder()

    def open(self) -> None:
        import serial

        self.serial = serial.Serial(self.port, self.baud, timeout=0)

    def read(self, timeout: float) -> list[str]:
        if self.serial is None:
            raise OSError("reader not open")
        ready, _, _ = select.select([self.serial.fileno()], [], [], timeout)
        if not ready:
            return []
        data = self.serial.read(256)
        if not data:
            raise OSError("reader gone")
        return self.decoder.feed(data)

    def close(self) -> None:
        if self.serial is not None:
            self.serial.close()
            self.serial = None


class PcscReader:
    """A PC/SC reader (ISO 14443 cards) through pyscard, installed with `pip install pyscard`."""

    GET_UID = (0xFF, 0xCA, 0x00, 0x00, 0x00)

    def __init__(self, reader_name: str = "") -> None:
        self.name = reader_name or "pcsc"
        self.reader_name = reader_name
        self.reader: Any = None  # a pyscard reader
        self.last = ""

    def open(self) -> None:
        try:
            from smartcard.System import readers
        except ImportError:
            raise OSError("PC/SC readers need pyscard: pip install pyscard") from None
        found = [r for r in readers() if self.reader_name in str(r)]
        if not found:
            raise OSError(f"no PC/SC reader matching {self.reader_name!r}")
        self.reader = found[0]

    def read(self, timeout: float) -> list[str]:
        from smartcard.Exceptions import CardConnectionException, NoCardException

        conn = self.reader.createConnection()
        try:
            conn.connect()
            data, sw1, sw2 = conn.transmit(list(self.GET_UID))
        except (NoCardException, CardConnectionException):
            self.last = ""
            time.sleep(timeout)
            return []
        finally:
            with contextlib.suppress(Exception):  # a card pulled mid-read: nothing to release
                conn.disconnect()
        uid = bytes(data).hex().upper() if (sw1, sw2) == (0x90, 0x00) else ""
        if uid == self.last:  # the card is still on the reader
            time.sleep(timeout)
            return []
        self.last = uid
        return [uid] if uid else []

    def close(self) -> None:
        self.reader = None


class SimReader:
    """A reader for the demo and the tests: `present(uid)` is a card held to it."""

    def __init__(self, name: str = "sim") -> None:
        self.name = name
        self.cards: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.gone = False

    def present(self, uid: str) -> None:
        self.cards.put(uid)

    def open(self) -> None:
        if self.gone:
            raise OSError("simulated reader unplugged")

    def read(self, timeout: float) -> list[str]:
        if self.gone:
            raise OSError("simulated reader unplugged")
        try:
            return [self.cards.get(timeout=timeout)]
        except queue.Empty:
            return []

    def close(self) -> None:
        pass


class ReaderLoop:
    """Runs a reader in a thread: debounces repeats, reports a lost reader and re-opens it."""

    def __init__(
        self,
        reader: Reader,
        on_badge: Callable[[str], object],
        on_state: Callable[[str, str], None] = lambda state, why: None,
        debounce_s: float = 2.0,
        reopen_s: float = 2.0,
    ) -> None:
        self.reader = reader
        self.on_badge, self.on_state = on_badge, on_state
        self.debounce_s, self.reopen_s = debounce_s, reopen_s
        self.state = "closed"
        self.failures = 0  # badge reads whose handling raised (the ledger could not be written)
        self._last: tuple[str, float] = ("", 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{reader.name}", daemon=True)

    def start(self) -> ReaderLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.reader.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reader.open()
            except OSError as exc:
                self._set("lost", str(exc))
                self._stop.wait(self.reopen_s)
                continue
            self._set("open", "")
            try:
                while not self._stop.is_set():
                    for uid in self.reader.read(0.2):
                        self._seen(uid)
            except OSError as exc:
                self._set("lost", str(exc))
                self.reader.close()
                self._stop.wait(self.reopen_s)

    def _seen(self, uid: str) -> None:
        now = time.monotonic()
        if uid == self._last[0] and now - self._last[1] < self.debounce_s:
            self._last = (uid, now)  # a card held still keeps renewing its own debounce
            return
        self._last = (uid, now)
        try:
            self.on_badge(uid)
        except Exception:  # a full disk, a failing ledger: this read is lost, the reader is not
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.exception(
                    "a badge read could not be handled (%d so far); the reader goes on", self.failures
                )

    def _set(self, state: str, why: str) -> None:
        if state != self.state:
            self.state = state
            self.on_state(state, why)
