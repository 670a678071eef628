"""Real GRBL 1.1h and Marlin 2.1.2 (built for this host, `../shared/realfw/`) behind a pty, for tests.

socat turns the firmware's stdin/stdout into a pseudo-terminal the agent opens like a USB port. The
firmware's own execution log (GRBL_SIM_BLOCKLOG, MARLIN_CMDLOG) is the ground truth the tests read.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Marlin's emergency parser acts on these as they arrive, before any checksum: a flip that writes one
# (M110 -> M112) halts the printer, as it would on a real wire; the noise here never writes them.
EMERGENCY = (b"M112", b"M108", b"M410", b"M876")
REALFW = Path(os.environ.get("AFN_REALFW", ROOT.parent / "shared" / "realfw"))
GRBL_BIN = REALFW / "bin" / "grbl-1.1h-sim"
MARLIN_BIN = REALFW / "bin" / "marlin-2.1.2-linux"


def available() -> str:
    """Empty when both firmwares and socat are here; otherwise what is missing."""
    missing = [str(p) for p in (GRBL_BIN, MARLIN_BIN) if not os.access(p, os.X_OK)]
    if not shutil.which("socat"):
        missing.append("socat")
    return ", ".join(missing)


class RealFirmware:
    """One firmware process behind a pty; `link` is the port to open, `log` its execution log."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        grbl_args: str = "-n -s /dev/null -t 1",
    ) -> None:
        self.kind = kind
        self.grbl_args = grbl_args
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.link = self.dir / f"{kind}.tty"
        self.log = self.dir / ("blocks.log" if kind == "grbl" else "commands.log")
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RealFirmware:
        """Start socat and the firmware; return once the pty exists."""
        env = dict(os.environ, **self.env)
        if self.kind == "grbl":
            env["GRBL_SIM_BLOCKLOG"] = str(self.log)
            exe = f"stdbuf -i0 {GRBL_BIN} {self.grbl_args}"
        else:
            env["MARLIN_CMDLOG"] = str(self.log)
            if env.get("MARLIN_RX_DROP") == "1":
                env["MARLIN_RX_STATS"] = str(self.dir / "rx.stats")
            exe = str(MARLIN_BIN)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.proc = subprocess.Popen(
            ["socat", f"PTY,raw,echo=0,link={self.link}", f"EXEC:{exe},pty,raw,echo=0"],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "socat.err", "wb"),  # noqa: SIM115 - the child owns it
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.link.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} firmware did not start: {self.stderr()}")
            time.sleep(0.02)
        return self

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "socat.err").read_text(errors="replace")[-2000:]
        return ""

    def rx_dropped(self) -> int:
        """Bytes Marlin's UART-like ring dropped (MARLIN_RX_DROP=1): "received dropped max_used"."""
        path = self.dir / "rx.stats"
        for _ in range(50):  # Marlin rewrites the file as it reads: one read may find it empty
            fields = path.read_text().split() if path.exists() else ["0", "0"]
            if len(fields) >= 2:
                return int(fields[1])
            time.sleep(0.01)
        raise AssertionError(f"{path}: no statistics in it")

    def executed(self) -> list[str]:
        """Marlin: every command it ran, in order, as it read them (N and checksum included)."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            _, _, text = line.partition(" ")
            out.append(text)
        return out

    def blocks(self) -> list[tuple[int, int, int]]:
        """GRBL: the target (x, y, z in steps) of every block its planner accepted, in order."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.append((int(parts[1]), int(parts[2]), int(parts[3])))
        return out

    def say(self, text: str, timeout: float = 5.0) -> bytes:
        """Write one line straight to the firmware (no agent attached); return its answer, up to its
        `ok` or `error:`. Whatever it printed before (boot messages) is read and dropped first."""
        port = RawPort(self.link)
        try:
            port.lines(quiet=0.5)
            answer = port.talk(text.encode() + b"\n", quiet=timeout, limit=timeout, until=(b"ok", b"error:"))
            return "\n".join(answer).encode()
        finally:
            port.close()

    def restart(self) -> None:
        """Power-cycle the firmware; the pty goes away and comes back at the same path."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


def command_text(logged: str) -> str:
    """A logged Marlin command without its line number and checksum: `N5 G1 X1*33` -> `G1 X1`."""
    text = logged.split("*", 1)[0].strip()
    if text[:1] == "N":
        text = text.split(None, 1)[1] if " " in text else ""
    return text.strip()


class RawPort:
    """The firmware's pty, opened raw; `talk` writes and returns the answer's lines."""

    def __init__(self, path) -> None:
        self.fd = os.open(str(path), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""

    def lines(self, quiet: float = 0.4, limit: float = 10.0, until: tuple[bytes, ...] = ()) -> list[str]:
        """Lines until `quiet` seconds pass with nothing new (or a line starting with one of `until`)."""
        out: list[str] = []
        deadline, last = time.monotonic() + limit, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            if select.select([self.fd], [], [], 0.02)[0]:
                self.buf += os.read(self.fd, 4096)
                last = time.monotonic()
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text:
                    out.append(text)
                    if until and line.strip().startswith(until):
                        return out
        return out

    def talk(self, data: bytes, **kw) -> list[str]:
        os.write(self.fd, data)
        return self.lines(**kw)

    def close(self) -> None:
        os.close(self.fd)


class NoisyLink:
    """A pty between the agent and the firmware that flips bytes and drops lines on the way in.

    A line of n bytes gets one bit flipped with odds `flip * n` (so a fraction `flip` of all bytes), at
    most one byte a line: two flips of the same bit in one line cancel in Marlin's XOR checksum, which
    no host can see (`double` flips each byte independently, to show it).
    Only host-to-firmware traffic is damaged; the answers pass untouched. Counts what it did.
    """

    def __init__(
        self, target: Path, flip: float, drop_line: float, seed: int = 1, double: bool = False
    ) -> None:
        self.target = target
        self.double = double
        self.flip, self.drop_line = flip, drop_line
        self.rng = random.Random(seed)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self.fw = os.open(str(target), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fw)
        self.flipped = self.dropped = self.bytes = 0
        self._line = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noisy-link", daemon=True)

    def start(self) -> NoisyLink:
        self._thread.start()
        return self

    def _damage(self, data: bytes) -> bytes:
        out = bytearray()
        for whole in self._lines(self._line, data):
            line = bytearray(whole)
            if self.rng.random() < self.drop_line:
                self.dropped += 1
                continue
            self.bytes += len(line)
            if self.double:
                for i in range(len(line) - 1):
                    if self.rng.random() < self.flip:
                        self._flip_one(line, i)
            elif self.rng.random() < self.flip * len(line):  # one byte in `flip` on average, one a line
                self._flip_one(line)
            out += line
        return bytes(out)

    def _answers(self, data: bytes) -> bytes:
        """The firmware's bytes on their way to the host: untouched here."""
        return data

    @staticmethod
    def _lines(pending: bytearray, data: bytes) -> list[bytes]:
        """Whole lines (each with its newline) of `pending` + `data`; a partial one stays in `pending`."""
        pending += data
        end = pending.rfind(b"\n") + 1
        whole = bytes(pending[:end])
        del pending[:end]
        return [line + b"\n" for line in whole.split(b"\n")[:-1]]

    def _flip_one(self, line: bytearray, at: int | None = None) -> None:
        """One bit of one byte (of byte `at`, else of any but the newline), drawn again while it would
        write an emergency command."""
        before = sum(line.count(word) for word in EMERGENCY)
        where = at
        while True:
            at = self.rng.randrange(len(line) - 1) if where is None else where
            bit = 1 << self.rng.randrange(7)
            line[at] ^= bit
            if sum(line.count(word) for word in EMERGENCY) <= before:
                break
            line[at] ^= bit
        self.flipped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master, self.fw], [], [], 0.05)
            try:
                if self.master in ready:
                    data = os.read(self.master, 4096)
                    if data:
                        os.write(self.fw, self._damage(data))
                if self.fw in ready:
                    data = os.read(self.fw, 4096)
                    if data:
                        os.write(self.master, self._answers(data))
            except OSError:
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self._slave, self.fw):
            with contextlib.suppress(OSError):
                os.close(fd)


class TamperLink(NoisyLink):
    """A clean line with deliberate changes, line by line: `to_firmware(line)` on each line the host
    writes, `to_host(line)` on each the firmware writes (None drops it). Each gets the line with its
    newline and returns the bytes to pass on."""

    def __init__(
        self,
        target: Path,
        to_firmware: Callable[[bytes], bytes] = lambda line: line,
        to_host: Callable[[bytes], bytes | None] = lambda line: line,
    ) -> None:
        super().__init__(target, flip=0.0, drop_line=0.0)
        self.to_firmware, self.to_host = to_firmware, to_host
        self._heard = bytearray()

    def _damage(self, data: bytes) -> bytes:
        out = bytearray()
        for line in self._lines(self._line, data):
            out += self.to_firmware(line)
        return bytes(out)

    def _answers(self, data: bytes) -> bytes:
        out = bytearray()
        for line in self._lines(self._heard, data):
            out += self.to_host(line) or b""
        return bytes(out)
