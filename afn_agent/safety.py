"""Guards that keep machines safe when nobody is watching: interlocks (lid, door, extraction),
the idle heat guard, and session limits reached mid-job. The stall guard and the recovery's safe
state live with the machine thread (they act on the serial link); these act on the whole agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .config import AgentConfig
from .ledger import Ledger
from .ledger.usage import parse_iso, utc_now
from .machine.events import MachineState
from .machine.worker import Machine
from .publisher import Publisher

if TYPE_CHECKING:
    from .access.service import Access

log = logging.getLogger("afn_agent.safety")


class SimInterlock:
    """An interlock for tests and the demo: `opened = True` is the lid lifted."""

    def __init__(self) -> None:
        self.opened = False

    def is_open(self) -> bool:
        return self.opened


class GpioInterlock:
    """A switch on a GPIO line read through the kernel's gpiod interface (`pip install gpiod`).

    Closed circuit = safe; an open circuit (or a cut wire) reads as open, as a safety input must.
    """

    def __init__(self, chip: str, line: int, active_high: bool = False) -> None:
        try:
            import gpiod
        except ImportError:
            raise OSError("GPIO interlocks need the gpiod package: pip install gpiod") from None
        path = chip if chip.startswith("/dev/") else f"/dev/{chip}"
        settings = gpiod.LineSettings(direction=gpiod.line.Direction.INPUT, bias=gpiod.line.Bias.PULL_UP)
        self.request = gpiod.request_lines(path, consumer="afn-agent", config={line: settings})
        self.line, self.active_high = line, active_high

    def is_open(self) -> bool:
        high = self.request.get_value(self.line).value == 1
        return high if self.active_high else not high


def make_interlock(spec: str) -> SimInterlock | GpioInterlock:
    """`sim` or `gpio:<chip>:<line>[:active_high]`."""
    if spec == "sim":
        return SimInterlock()
    parts = spec.split(":")
    return GpioInterlock(parts[1], int(parts[2]), len(parts) > 3 and parts[3] == "active_high")


class JobsView(Protocol):
    """What the guards need of the pump."""

    def running_ids(self) -> frozenset[str]: ...
    def raise_alarm(self, machine_id: str, kind: str, data: dict[str, Any]) -> None: ...


class Guards:
    """Checked by the pump's thread about once a second; each guard acts at most once per cause."""

    def __init__(
        self,
        config: AgentConfig,
        machines: Mapping[str, Machine],
        jobs: JobsView,
        publisher: Publisher,
        ledger: Ledger,
        access: Access | None,
        cancel: Callable[[str, str], bool],
    ) -> None:
        self.config, self.machines, self.jobs, self.publisher = config, machines, jobs, publisher
        self.ledger, self.access, self.cancel = ledger, access, cancel
        self.interlocks = {m.id: make_interlock(m.interlock) for m in config.machines if m.interlock}
        self.open: dict[str, bool] = dict.fromkeys(self.interlocks, False)
        self.activity: dict[str, float] = {m.id: time.monotonic() for m in config.machines}
        self.warned: set[str] = set()
        self.acted: set[str] = set()

    def set_interlock(self, machine_id: str, spec: str | None) -> None:
        """A machine's interlock after a reload (the pump's thread, with no job on that machine)."""
        self.interlocks.pop(machine_id, None)
        self.open.pop(machine_id, None)
        if spec:
            self.interlocks[machine_id] = make_interlock(spec)
            self.open[machine_id] = False

    def touch(self, machine_id: str) -> None:
        self.activity[machine_id] = time.monotonic()

    def blocked(self, machine_id: str) -> bool:
        """A job may not start with the machine's interlock open."""
        return self.open.get(machine_id, False)

    def check(self, now: float) -> None:
        running = self.jobs.running_ids()
        for machine_id in self.interlocks:
            self._interlock(machine_id)
        for machine_id in self.machines:
            self._idle_heat(machine_id, machine_id in running, now)
            if machine_id in running:
                self._session_limit(machine_id)

    def _interlock(self, machine_id: str) -> None:
        try:
            is_open = self.interlocks[machine_id].is_open()
        except OSError as exc:
            is_open = True  # a switch we cannot read is not a closed switch
            log.warning("interlock of %s unreadable: %s", machine_id, exc)
        if is_open == self.open[machine_id]:
            return
        self.open[machine_id] = is_open
        machine = self.machines[machine_id]
        if is_open:
            held = machine.state == MachineState.PRINTING
            if held:
                machine.interlock_hold()
            self.jobs.raise_alarm(machine_id, "interlock-open", {"held": held, "meaning": "interlock open"})
        else:
            self.publisher.event(machine_id, "interlock-closed", {"resume": "a person resumes the job"})

    def _idle_heat(self, machine_id: str, running: bool, now: float) -> None:
        machine = self.machines[machine_id]
        heaters_off = machine.profile.scripts.heaters_off
        if running:
            self.activity[machine_id] = now
        if not heaters_off or machine.state != MachineState.IDLE or running:
            return
        if not any(target > 0 for _, target in machine.temperatures.values()):
            return
        idle_s = self.config.safety.idle_heat_s
        if now - self.activity.get(machine_id, now) < idle_s:
            return
        self.activity[machine_id] = now  # once per idle spell
        machine.run_script("heaters-off", heaters_off)
        data = {"idle_min": round(idle_s / 60, 1), "lines": list(heaters_off)}
        self.publisher.event(machine_id, "idle-heat-off", data)
        self.ledger.audit("agent", "idle-heat-off", "sent", machine_id)

    def _session_limit(self, machine_id: str) -> None:
        if self.access is None:
            return
        session = self.access.sessions.current(machine_id)
        if session is None or not session["allowed_until"]:
            return
        until = parse_iso(session["allowed_until"])
        left = (until - utc_now()).total_seconds()
        key = session["id"]
        policy = self.config.machine(machine_id).session_end
        if left <= self.config.safety.session_warn_s and key not in self.warned:
            self.warned.add(key)
            data: dict[str, Any] = {
                "minutes_left": round(left / 60, 1),
                "then": policy,
                "until": session["allowed_until"],
            }
            self.publisher.event(machine_id, "session-ending", data)
        if left <= 0 and key not in self.acted:
            self.acted.add(key)
            self._end_of_session(machine_id, session, policy)

    def _end_of_session(self, machine_id: str, session: dict[str, Any], policy: str) -> None:
        if policy == "pause":
            self.machines[machine_id].pause()
        elif policy == "stop":
            self.cancel(machine_id, "session-end")
        self.publisher.event(
            machine_id, "session-ended", {"action": policy, "member_id": session["member_id"]}
        )
        self.ledger.audit("agent", "session-end", policy, machine_id, session["id"])
