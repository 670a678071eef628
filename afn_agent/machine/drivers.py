"""What differs between firmware families, behind one interface the machine thread drives.

A driver is chosen once per machine from its profile. It owns the protocol core and speaks only
through it: pause, resume, cancel, emergency stop, safe state, the job's start and end lines, and
realtime bytes. The machine thread keeps the loop, the port and the job; it never asks which
protocol it talks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..firmware import events as ev
from ..firmware.console_lines import GrblConsole, MarlinConsole
from ..firmware.grbl import FEED_HOLD, REALTIME, GrblProtocol
from ..firmware.marlin import ExpressBatch, MarlinProtocol
from ..firmware.profile import Profile
from .events import MachineState
from .link import Exchanged

END_MARK = "end-of-job"


@dataclass(frozen=True, slots=True)
class Stop:
    """What a driver did to stop a machine: bytes to write now, the state it leaves the machine in,
    the actions as the safe-state event names them, and lines to send once the controller is back."""

    now: bytes
    state: MachineState
    actions: tuple[str, ...]
    after_reset: tuple[str, ...] = ()


class Driver:
    """The common part; `MarlinDriver` and `GrblDriver` fill in what their firmware needs."""

    core: MarlinProtocol | GrblProtocol
    parens = False  # `( … )` is a comment in job files
    tool_change_by_host = False  # M6 in a job is the agent's to carry out (the firmware has none)
    line_overhead = 1  # bytes a line gains on the wire beyond its text and newline
    has_express = False  # a compiled exchange carries the steady stream (express_lines)

    def __init__(self, profile: Profile, now: float) -> None:
        self.profile = profile
        self.new_core(now)

    def new_core(self, now: float) -> None:
        """A fresh protocol state for a new connection."""
        raise NotImplementedError

    @property
    def stop_bytes(self) -> bytes:
        """Out-of-band e-stop bytes, written from any thread; `emergency_stop()` catches up after."""
        return self.core.STOP_BYTES

    @property
    def line_limit(self) -> int:
        return self.profile.link.max_line - self.line_overhead

    @property
    def locked(self) -> bool:
        """The controller refuses motion until a person unlocks it."""
        return False

    @property
    def motion_stopped(self) -> bool:
        return True

    @property
    def travel_known(self) -> bool:
        """Machine coordinates say where the axes are within their travel (the machine homes): only then
        are jobs, frames and jogs checked against the profile's travel here. Marlin clamps moves itself."""
        return False

    def pause_bytes(self) -> bytes:
        """Written at once by the caller's thread when a person pauses."""
        return b""

    def door_bytes(self) -> bytes:
        """The controller's own safety-door hold, if it has one."""
        return b""

    def realtime_bytes(self, name: str) -> bytes:
        raise ValueError(f"{self.profile.name} has no realtime commands")

    def begin_job(self, check: bool) -> bool:
        """Mark the job started in the core, queue the profile's start script; True if in check mode."""
        self.core.begin_job()
        self.send_script(self.profile.scripts.start)
        return False

    def end_job(self) -> None:
        self.core.end_job()

    def send_end(self, check: bool) -> None:
        """Queue the lines whose answer means the job has left the machine (tagged END_MARK)."""
        raise NotImplementedError

    def pause(self) -> None:
        """Machine thread, after `pause_bytes`: what else a pause needs."""

    def resume(self, restore: list[str]) -> bytes:
        """Bytes to write now, after queueing what resuming needs (`restore`: the job's modes)."""
        raise NotImplementedError

    def cancel(self) -> bytes:
        """Stop the job; bytes to write now. Empty: the cancel script is queued already."""
        raise NotImplementedError

    def cancel_script(self, check: bool) -> None:
        self.core.discard_job()
        self.send_script(self.profile.scripts.cancel)
        self.send_end(check)

    def emergency_stop(self) -> tuple[MachineState, bool]:
        """The core catches up with an e-stop already written: (the state after, acted on arrival)."""
        raise NotImplementedError

    def soft_reset(self) -> bytes:
        raise ValueError(f"{self.profile.name} cannot be reset by the host")

    @property
    def console(self) -> GrblConsole | MarlinConsole:
        """The family's console lines (jog, zero, probe …), reading the current core's settings."""
        raise NotImplementedError

    def continue_bytes(self) -> bytes:
        """Written at once when a person answers a firmware's wait (empty: the firmware cannot be told)."""
        return b""

    def unlock(self) -> None:
        """After an alarm a person has dealt with; nothing to do where the firmware never locks."""

    def safe_state(self) -> Stop:
        """The profile's safe state on an idle machine."""
        script = self.profile.scripts.safe_state
        self.send_script(script)
        return Stop(b"", MachineState.IDLE, script)

    def stall_stop(self) -> Stop:
        """The firmware went silent mid-job: stop it by the out-of-band way."""
        raise NotImplementedError

    def on_firmware_info(self, info: ev.FirmwareInfo) -> None:
        """What to ask of a firmware once it has said what it can do."""

    def stops_on_error(self) -> bool:
        """A firmware error on a job line fails the job (GRBL went on without that line)."""
        return False

    def break_waits(self) -> bytes:
        """Before greeting a firmware that may be stuck in a heating wait: bytes that end it."""
        return b""

    def express_lines(self, pending: Iterable[tuple[Any, ...]], now: float) -> ExpressBatch | None:
        """Job lines (tuples text, tag, ...) for the compiled exchange (link.express), when the family
        has one and the stream is steady; None: the Python path's turn."""
        return None

    def express_done(self, batch: ExpressBatch, done: Exchanged, now: float) -> None:
        """The core replays a burst of the compiled exchange (only a family with `express_lines`)."""
        raise NotImplementedError

    def send_script(self, lines: tuple[str, ...] | list[str]) -> None:
        """Host lines, ahead of the job's."""
        for line in lines:
            self.core.send(line, host=True)


class MarlinDriver(Driver):
    core: MarlinProtocol
    line_overhead = 16  # `N<line> ` and `*<checksum>`
    has_express = True

    def new_core(self, now: float) -> None:
        self.core = MarlinProtocol(self.profile, now)

    def express_lines(self, pending: Iterable[tuple[Any, ...]], now: float) -> ExpressBatch | None:
        return self.core.express_lines(pending, now)

    def express_done(self, batch: ExpressBatch, done: Exchanged, now: float) -> None:
        core = self.core
        core.express_done(batch, done.sent, done.oks, now, answered=done.answered, received=done.received)

    def send_end(self, check: bool) -> None:
        # M400 waits for the planner; M105's `ok T:` answers every line before it even if oks were lost
        self.core.send("M400")
        self.core.send("M105", END_MARK)

    def pause(self) -> None:
        self.send_script(self.profile.scripts.pause)

    def resume(self, restore: list[str]) -> bytes:
        self.send_script((*self.profile.scripts.resume, *restore))
        return b""

    def cancel(self) -> bytes:
        self.cancel_script(False)
        return b""

    def emergency_stop(self) -> tuple[MachineState, bool]:
        self.core.emergency_stop()
        return MachineState.FAULT, self.core.has_emergency_parser  # halted until someone resets it

    def stall_stop(self) -> Stop:
        return Stop(self.core.emergency_stop(), MachineState.FAULT, ("M112",))  # the emergency parser acts

    @property
    def console(self) -> MarlinConsole:
        return MarlinConsole(self.core)

    def continue_bytes(self) -> bytes:
        return self.core.continue_bytes()

    def on_firmware_info(self, info: ev.FirmwareInfo) -> None:
        if info.capabilities.get("AUTOREPORT_TEMP"):
            self.core.send("M155 S2", host=True)

    def break_waits(self) -> bytes:
        return self.core.break_waits()


class GrblDriver(Driver):
    core: GrblProtocol
    parens = True
    tool_change_by_host = True  # GRBL 1.1 answers M6 with error:20

    @property
    def console(self) -> GrblConsole:
        return GrblConsole(self.core)

    def continue_bytes(self) -> bytes:
        return self.core.cycle_start()

    def new_core(self, now: float) -> None:
        self.core = GrblProtocol(self.profile, now)

    @property
    def locked(self) -> bool:
        return self.core.alarm_locked

    @property
    def motion_stopped(self) -> bool:
        return self.core.motion_stopped

    @property
    def travel_known(self) -> bool:
        return self.core.homing_enabled

    def pause_bytes(self) -> bytes:
        return FEED_HOLD

    def door_bytes(self) -> bytes:
        return REALTIME["door"]

    def realtime_bytes(self, name: str) -> bytes:
        """A realtime byte by name for the caller's thread; a reset goes through the thread instead."""
        if name not in REALTIME:
            raise ValueError(f"unknown realtime command {name!r} (known: {', '.join(sorted(REALTIME))})")
        return REALTIME[name]

    def begin_job(self, check: bool) -> bool:
        self.core.begin_job()
        if check:
            self.core.send("$C", host=True)
        self.send_script(self.profile.scripts.start)
        return check

    def send_end(self, check: bool) -> None:
        self.core.send("$C" if check else "G4 P0", END_MARK)

    def resume(self, restore: list[str]) -> bytes:
        return self.core.realtime("resume")

    def cancel(self) -> bytes:
        """A hold first: the reset comes once the axes have stopped, so the position is kept."""
        self.core.discard_job()
        return self.core.feed_hold()

    def emergency_stop(self) -> tuple[MachineState, bool]:
        self.core.emergency_stop()
        return MachineState.RESETTING, True  # it resets itself: its banner, then idle or alarm

    def soft_reset(self) -> bytes:
        return self.core.soft_reset()

    def unlock(self) -> None:
        self.core.unlock()

    def safe_state(self) -> Stop:
        """Hold, then reset (spindle and laser off, planner emptied); the script after its banner."""
        script = self.profile.scripts.safe_state
        now = self.core.realtime("hold") + self.core.soft_reset()
        return Stop(now, MachineState.IDLE, ("feed hold", "soft reset", *script), script)

    def stall_stop(self) -> Stop:
        return Stop(self.core.realtime("hold") + self.core.soft_reset(), MachineState.FAULT,
                    ("feed hold", "soft reset"))  # fmt: skip

    def stops_on_error(self) -> bool:
        return not self.core.check_mode


def driver_for(profile: Profile, now: float) -> Driver:
    """The driver of a profile's protocol: the one place that asks which it is."""
    drivers: dict[str, Callable[[Profile, float], Driver]] = {"marlin": MarlinDriver, "grbl": GrblDriver}
    return drivers[profile.protocol](profile, now)
