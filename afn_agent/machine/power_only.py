"""A machine the agent does not stream to (`protocol = "none"`): a laser run from its own software, a
vinyl cutter, a sewing machine. It has no serial thread; the agent switches its power with the session
(its plug thread, power/plug.py) and bills it from the session and the power measured. To the rest of
the agent it is a machine like any other, always idle: nothing can be sent to it."""

from __future__ import annotations

import queue
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..console_config import ConsoleSettings
from ..firmware.profile import Profile
from .console import ConsoleAction, ConsoleRefused
from .events import JobResult, MachineEvent, MachineState
from .worker import Machine


class NotStreamed(RuntimeError):
    """Something only a streamed machine can do was asked of a power-only one."""


class PowerOnlyMachine(Machine):
    """The handle of a power-only machine (no thread of its own: its plug has one)."""

    def __init__(self, name: str, profile: Profile, events: queue.Queue[MachineEvent] | None = None) -> None:
        # Machine.__init__ is not called: it would open a serial link this machine does not have
        self.name, self.profile = name, profile
        self.events = events if events is not None else queue.Queue()
        self.state = MachineState.IDLE
        self.firmware = "none (power only)"
        self.temperatures = {}
        self.heat_eta_s = {}
        self.position = {}
        self.grbl_state = ""
        self.grbl_fields = {}
        self.result: JobResult | None = None
        self.last_error = ""
        self.work_offset = {}
        self.prompt = None
        self.last_probe = None
        self.settings = ConsoleSettings()
        self._started = False

    @property
    def heartbeat(self) -> float:
        """Always now: there is no thread here to get stuck (the plug thread has its own)."""
        return time.monotonic()

    @heartbeat.setter
    def heartbeat(self, value: float) -> None:
        pass

    @property
    def heating(self) -> bool:
        return False

    def is_alive(self) -> bool:
        return self._started

    def console(self, action: ConsoleAction) -> Future[str]:
        answer: Future[str] = Future()
        answer.set_exception(ConsoleRefused("power-only", machine=self.name))
        return answer

    def start(self) -> PowerOnlyMachine:
        self._started = True
        return self

    def wait_ready(self, timeout: float = 15.0) -> bool:
        return True

    def close(self) -> None:
        self._started = False

    def start_job(self, path: str | Path, check: bool = False, density_g_cm3: float | None = None) -> None:
        raise NotStreamed(f"{self.name} is not driven by the agent: badge in and use it at the machine")

    def cancel(self, who: str = "member") -> None:
        pass  # a session's use ends with the session

    def pause(self) -> float:
        return -1.0

    def resume(self) -> None:
        pass

    def emergency_stop(self, who: str = "") -> float:
        return -1.0  # its power switch is the only stop the agent has: the rules cut it outside a session

    def safe_state(self, reason: str) -> None:
        pass

    def safe_state_taken(self) -> bool:
        return True

    def interlock_hold(self) -> None:
        pass

    def run_script(self, name: str, lines: tuple[str, ...]) -> None:
        pass

    def unlock(self) -> None:
        pass

    def reconnect(self) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {
            "machine": self.name, "state": self.state, "firmware": self.firmware, "job": None,
            "progress": 0.0, "lines_acked": 0, "material_mm_used": 0.0, "temperatures": {}, "position": {},
            "grbl_state": "", "resends": 0, "errors": 0, "bytes_sent": 0, "window_bytes": 0,
            "planner_free": None,
        }  # fmt: skip
