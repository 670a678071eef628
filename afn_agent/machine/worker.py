"""One thread per machine: this is the handle other threads hold; the thread's loop is loop.py.

A handle posts commands to the loop and reads what the loop publishes on it. Emergency stop, feed
hold and realtime bytes are written by the caller's thread at once, through the link's lock; their
bytes come from the machine's driver.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..console_config import ConsoleSettings
from ..firmware.profile import Profile
from .console import ConsoleAction, Prompt
from .drivers import Driver
from .events import JobResult, MachineEvent, MachineState
from .link import LinkLost, SerialLink
from .loop import MachineLoop

__all__ = ["JobResult", "Machine", "MachineEvent", "MachineState"]


class Machine:
    """A machine on a serial port, driven by its own thread."""

    def __init__(
        self,
        name: str,
        profile: Profile,
        port: str,
        baud: int | None = None,
        events: queue.Queue[MachineEvent] | None = None,
        stop_on_grbl_error: bool = True,
        reconnect_s: float = 2.0,
    ) -> None:
        self.name = name
        self.profile = profile
        self.link = SerialLink(port, baud or profile.link.baud, profile.link.write_timeout_s)
        self.events: queue.Queue[MachineEvent] = events if events is not None else queue.Queue()
        # published by the machine thread: each value replaced, never changed in place
        self.state = MachineState.DISCONNECTED
        self.firmware = ""
        self.temperatures: Mapping[str, tuple[float, float]] = {}
        self.heat_eta_s: Mapping[str, float | None] = {}  # seconds until each heater is at its target
        self.position: Mapping[str, float] = {}
        self.grbl_state = ""
        self.grbl_fields: Mapping[str, str] = {}  # the last status report's fields (FS: feed, spindle)
        self.work_offset: Mapping[str, float] = {}  # GRBL WCO: work position = machine − offset
        self.prompt: Prompt | None = None  # what a waiting job asks of a person
        self.last_probe: dict[str, Any] | None = None  # the console's last Z probe: touched, where
        self.settings = ConsoleSettings()  # the console's settings (the agent replaces them on reload)
        self.result: JobResult | None = None  # the last job's
        self.last_error = ""
        self.heartbeat = time.monotonic()  # the thread turned; the systemd watchdog reads it
        self.loop = MachineLoop(self, stop_on_grbl_error, reconnect_s)
        self._thread: threading.Thread | None = None

    @property
    def driver(self) -> Driver:
        return self.loop.driver

    @property
    def core(self) -> Any:
        """The protocol core of the current connection (its counters: resends, errors, window)."""
        return self.loop.driver.core

    @property
    def heating(self) -> bool:
        job = self.loop.job
        return job is not None and job.heating

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Machine:
        self._thread = threading.Thread(target=self.loop.run, name=f"machine-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float = 15.0) -> bool:
        return self.loop.ready.wait(timeout) and self.state == MachineState.IDLE

    def start_job(self, path: str | Path, check: bool = False, density_g_cm3: float | None = None) -> None:
        """Stream a file; with `check` (GRBL) run it in `$C` check mode: parsed, never moved. Its grams
        are weighed at `density_g_cm3` (the loaded material's) when given, else at the file's."""
        self.loop.job_done.clear()
        self.result = None
        self.loop.post("job", str(path), check, density_g_cm3)

    def wait_job(self, timeout: float | None = None) -> JobResult | None:
        self.loop.job_done.wait(timeout)
        return self.result

    def pause(self) -> float:
        """GRBL: `!` written at once (feed hold); Marlin: stop feeding and run the pause script.

        Returns the seconds from the call to the hold byte being written (0 when there is none)."""
        hold = self.driver.pause_bytes()
        t = self._urgent(hold) if hold else 0.0
        self.loop.post("pause")
        return t

    def realtime(self, name: str) -> float:
        """A realtime command by name (overrides, jog cancel, door, ...), written at once. A reset goes
        through the machine thread: the core must expect its banner, not read it as a power cut."""
        data = self.driver.realtime_bytes(name)
        if name == "reset":
            self.loop.post("soft_reset")
            return 0.0
        return self._urgent(data)

    def resume(self) -> None:
        self.loop.post("resume")

    def interlock_hold(self) -> None:
        """An interlock opened mid-job: GRBL's safety door (beam and spindle off at once), else pause."""
        door = self.driver.door_bytes()
        if door:
            self._urgent(door)
        else:
            self.pause()

    def console(self, action: ConsoleAction) -> Future[str]:
        """A set-up action (jog, zero, probe …) or a prompt's answer; the future says at once whether the
        machine took it (its text) or not (ConsoleRefused with the reason)."""
        answer: Future[str] = Future()
        self.loop.post("console", action, answer)
        return answer

    def cancel(self, who: str = "member") -> None:
        self.loop.post("cancel", who)

    def emergency_stop(self, who: str = "") -> float:
        """Out of band, from the caller's thread: the driver's stop bytes; returns the delay."""
        self.loop.post("estop", who)
        return self._urgent(self.driver.stop_bytes)

    def safe_state(self, reason: str) -> None:
        """Bring the machine to its profile's safe state now, or as soon as it is connected."""
        self.loop.safe_state(reason)

    def safe_state_taken(self) -> bool:
        """Every safe state asked for has been written and its event queued (or none was asked)."""
        return self.loop.safe_done >= self.loop.safe_asked

    def run_script(self, name: str, lines: tuple[str, ...]) -> None:
        """Send host commands to an idle machine (the idle heat guard's heaters-off)."""
        self.loop.post("script", name, lines)

    def unlock(self) -> None:
        """After an alarm a person has dealt with (GRBL `$X`); the machine may take jobs again."""
        self.loop.post("unlock")

    def reconnect(self) -> None:
        """Start afresh after a fault a person has dealt with: new protocol state, new handshake."""
        self.loop.ready.clear()
        self.loop.post("reconnect")

    def close(self) -> None:
        self.loop.closing = True
        self.loop.closed.set()
        self.link.wake()
        if self._thread:
            self._thread.join(5)
        self.link.close()
        self.link.release()

    def snapshot(self) -> dict[str, Any]:
        """A copy of the machine's state for the API, the bus and the CLI's progress bar."""
        job, core = self.loop.job, self.driver.core
        return {
            "machine": self.name,
            "state": self.state,
            "firmware": self.firmware,
            "job": job.path if job else None,
            "progress": job.progress() if job else 0.0,
            "lines_acked": job.acked_lines if job else 0,
            "material_mm_used": job.last_used.get("material_mm", 0.0) if job else 0.0,
            "temperatures": dict(self.temperatures),
            "position": dict(self.position),
            "work_offset": dict(self.work_offset),
            "grbl_state": self.grbl_state,
            "resends": core.resends,
            "errors": core.errors,
            "bytes_sent": self.link.bytes_written,
            "window_bytes": core.window.bytes,
            "planner_free": core.planner_free,
        }

    def _urgent(self, data: bytes) -> float:
        t0 = time.monotonic()
        try:
            self.link.write(data)
        except LinkLost:
            return -1.0
        return time.monotonic() - t0
