"""The simulator's clock and loop: bytes cross a paced wire, land in a ring that drops on overflow.

A subclass supplies the firmware: what a byte does on arrival, which internal events (planner,
heaters, timers) are due when, and what it prints. Everything runs in one thread, in time order.
"""

from __future__ import annotations

import json
import random
import re
import select
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from .wire import PtyLink, Wire

INF = float("inf")


@dataclass
class SimOptions:
    """How the simulated machine and its link behave, and which faults to inject."""

    baud: int = 115200
    latency_ms: float = 0.0
    rx_buffer: int = 128
    queue_depth: int = 4
    planner_blocks: int = 16
    move_ms: float = 2.0
    speed: float = 1.0
    corrupt: float = 0.0
    lost_ok: float = 0.0
    seed: int = 1
    reset_at: int = 0
    disconnect_at: int = 0
    replug_s: float = -1.0
    thermal_runaway_at: int = 0
    alarm_at: int = 0
    door_at: int = 0
    door_open_s: float = 1.0
    homing_lock: bool = False
    plate: bool = False
    babystep: bool = False
    prompt_support: bool = False
    plate_z: float = -40.0
    feed_time: bool = False
    stall_at: int = 0
    survive_estop: bool = False
    variant: str = ""
    advanced_ok: bool = True
    emergency_parser: bool = True
    autoreport: bool = True
    boot_s: float = 0.3
    log: str | None = None
    stats: str | None = None


@dataclass
class SimStats:
    """What the simulated firmware saw; `bytes_dropped` is the number a host must keep at zero."""

    bytes_received: int = 0
    bytes_dropped: int = 0
    tx_lost: int = 0  # replies nobody read (host port closed and the pty buffer full)
    bytes_flushed: int = 0
    lines_executed: int = 0
    line_errors: int = 0
    resend_requests: int = 0
    lines_corrupted: int = 0
    oks_lost: int = 0
    resets: int = 0
    unplugs: int = 0
    wire_busy_s: float = 0.0
    halted: str = ""
    urgent_arrivals: list[float] = field(default_factory=list)


class SimFirmware:
    """Base of the simulated firmwares: the pty, both wires, the RX ring, the loop, faults and logs."""

    name = "sim"
    # The bytes that may act as they arrive (end a line, a realtime command): the loop wakes for those
    # only, not for every byte's arrival (which cost a core's third at 115200 baud); the bytes between
    # are taken when it wakes, each at its own arrival time, so nothing the host sees changes.
    WAKES: re.Pattern[bytes] = re.compile(rb"[\x00-\xff]")

    def __init__(self, link_path: str | Path, opts: SimOptions | None = None) -> None:
        self.opts = opts or SimOptions()
        self.pty = PtyLink(link_path)
        self.rx = Wire(self.opts.baud, self.opts.latency_ms / 1000)
        self.tx = Wire(self.opts.baud, self.opts.latency_ms / 1000)
        self.ring = bytearray()
        self.ring_cap = self.opts.rx_buffer - 1
        self.stats = SimStats()
        self.rng = random.Random(self.opts.seed)
        self.halted = False
        self.booting_until = 0.0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._carry = b""
        self._replug_at = INF
        self._log: TextIO | None = None
        self.executed = 0

    # ---- running ------------------------------------------------------------------------------
    def start_thread(self) -> threading.Thread:
        """Run in a background thread (tests); returns once the port exists."""
        thread = threading.Thread(target=self.run, name=f"sim-{self.name}", daemon=True)
        thread.start()
        self._ready.wait(5)
        return thread

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        if self.opts.log:
            # line-buffered: tests read what ran while the simulator still runs
            self._log = open(self.opts.log, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the loop
        try:
            self.pty.open()
            self.reboot(time.monotonic(), first=True)
            self._ready.set()
            self._loop()
        finally:
            self.pty.close()
            self.stats.wire_busy_s = self.rx.busy_time
            if self._log:
                self._log.close()
            self.write_stats()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if self.pty.master >= 0:
                data = self.pty.read()
                if data:
                    self.stats.bytes_received += len(data)
                    self.rx.push(self._maybe_corrupt(data), now)
            elif now >= self._replug_at:
                self._replug_at = INF
                self.pty.open()
                self.reboot(now)
            self._advance(now)
            if self.pty.master >= 0:
                out = self.tx.take_until(now)
                if out:
                    self.stats.tx_lost += self.pty.write(out)
            arrival = self.rx.next_arrival_of(self.WAKES)  # a byte that may do something as it arrives
            nxt = min(arrival, self.next_event(), self.tx.next_arrival(), self._replug_at)
            timeout = min(max(nxt - time.monotonic(), 0.0), 0.05)
            if self.pty.master >= 0:
                if timeout > 0:
                    select.select([self.pty.master], [], [], timeout)
            else:
                time.sleep(timeout or 0.001)

    def _advance(self, now: float) -> None:
        """Process byte arrivals and internal events up to now, strictly in time order."""
        while True:
            te = self.next_event()
            tb = self.rx.next_arrival()
            if te <= tb:
                if te > now:
                    return
                self.fire_events(te)
            else:
                if tb > now:
                    return
                byte, t = self.rx.take_one()
                self._arrive(byte, t)

    def _arrive(self, byte: int, t: float) -> None:
        if self.halted or t < self.booting_until:
            return
        if self.on_urgent(byte, t):
            return
        if len(self.ring) >= self.ring_cap:
            self.stats.bytes_dropped += 1
            return
        self.ring.append(byte)
        self.drain_ring(t)

    def _maybe_corrupt(self, data: bytes) -> bytes:
        """Corrupt one byte in a fraction of the host's lines (never the newline itself)."""
        if self.opts.corrupt <= 0:
            return data
        data = self._carry + data
        cut = data.rfind(b"\n") + 1
        self._carry, data = data[cut:], data[:cut]
        out = bytearray()
        for line in data.splitlines(keepends=True):
            buf = bytearray(line)
            if len(buf) > 1 and self.rng.random() < self.opts.corrupt:
                i = self.rng.randrange(len(buf) - 1)
                buf[i] = self.rng.choice([c for c in b"0123456789GMXYZE. " if c != buf[i]])
                self.stats.lines_corrupted += 1
            out += buf
        return bytes(out)

    # ---- helpers for subclasses ---------------------------------------------------------------
    def out(self, text: str, t: float) -> None:
        """Print a line back to the host at simulated time t."""
        self.tx.push(text.encode() + b"\n", t)

    def ok_lost(self) -> bool:
        if self.opts.lost_ok > 0 and self.rng.random() < self.opts.lost_ok:
            self.stats.oks_lost += 1
            return True
        return False

    def log_executed(self, label: str, command: str, t: float) -> None:
        """Record one executed line; the count drives the fault triggers."""
        self.executed += 1
        self.stats.lines_executed += 1
        if self._log:
            self._log.write(f"{label}\t{command}\n")
        o = self.opts
        if self.executed == o.disconnect_at:
            self.unplug(t)
        elif self.executed == o.reset_at:
            self.reboot(t)

    def log_realtime(self, what: str) -> None:
        """A realtime byte that acted (cycle start, jog cancel): in the log, never counted as a line."""
        if self._log:
            self._log.write(f"rt\t{what}\n")

    def unplug(self, t: float) -> None:
        self.stats.unplugs += 1
        self.pty.unplug()
        self.rx.clear()
        self.tx.clear()
        if self.opts.replug_s >= 0:
            self._replug_at = time.monotonic() + self.opts.replug_s

    def reboot(self, t: float, first: bool = False) -> None:
        """Lose everything, like a power cycle, and print the start banner after booting."""
        if not first:
            self.stats.resets += 1
        self.ring.clear()
        self.tx.clear()
        self.halted = False
        self.booting_until = t + self.opts.boot_s / self.opts.speed if not first else t
        self.reset_state()
        self.banner(self.booting_until)

    def halt(self, reason: str) -> None:
        self.halted = True
        self.stats.halted = reason

    def write_stats(self) -> None:
        if self.opts.stats:
            Path(self.opts.stats).write_text(json.dumps(asdict(self.stats)), encoding="utf-8")

    def scaled(self, seconds: float) -> float:
        return seconds / self.opts.speed

    # ---- the firmware (subclass) --------------------------------------------------------------
    def reset_state(self) -> None:
        raise NotImplementedError

    def banner(self, t: float) -> None:
        raise NotImplementedError

    def on_urgent(self, byte: int, t: float) -> bool:
        """Bytes acted on at arrival (emergency parser, realtime commands); True if consumed."""
        return False

    def drain_ring(self, t: float) -> None:
        raise NotImplementedError

    def next_event(self) -> float:
        raise NotImplementedError

    def fire_events(self, t: float) -> None:
        raise NotImplementedError
