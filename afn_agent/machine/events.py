"""What a machine thread tells the rest of the agent: its state and one frozen event per fact.

Each event carries the facts it reports as they were when it happened (never read back from the
machine later), and says by class flags whether it goes on the events topic, is kept as an alarm in
the retained status, or changes that status. The pump dispatches on the type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar


class MachineState(StrEnum):
    """What the machine thread says its machine is doing (the wire spells the value)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    IDLE = "idle"
    PRINTING = "printing"  # running a job, whatever the machine makes
    PAUSED = "paused"
    WAITING = "waiting"  # a job waits for a person: a program pause, a tool or filament change
    RESETTING = "resetting"  # GRBL after a reset, until its banner
    ALARM = "alarm"  # GRBL locked until unlock()
    FAULT = "fault"  # until reconnect()


JOB_STATES = frozenset({MachineState.PRINTING, MachineState.PAUSED, MachineState.WAITING})
OFFLINE_STATES = frozenset({MachineState.DISCONNECTED, MachineState.CONNECTING})
STOPPED_STATES = frozenset({MachineState.ALARM, MachineState.FAULT})  # a person acts before the next job


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended, what it cost the link, and what its acknowledged lines used."""

    outcome: str  # completed | cancelled | failed
    reason: str = ""
    code: str = ""
    lines: int = 0
    bytes: int = 0
    seconds: float = 0.0
    resends: int = 0
    errors: int = 0
    file: str = ""
    check_errors: tuple[dict[str, Any], ...] = ()
    material_mm: float = 0.0  # what the acknowledged lines extruded (all tools)
    material_g: float = 0.0
    beam_on_s: float = 0.0  # estimated from the acknowledged lines, as the quote was
    spindle_on_s: float = 0.0
    estimated_s: float = 0.0  # of the acknowledged part of the job
    used: dict[str, Any] = field(default_factory=dict)  # per tool material and beam/spindle, as progress


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """Base of every machine event: which machine, and the wall-clock time it happened."""

    machine: str
    t: float
    kind: ClassVar[str] = ""  # the name on the wire (events topic "type")
    published: ClassVar[bool] = False  # on the events topic, through the outbox (never lost)
    alarm: ClassVar[bool] = False  # kept (ledger, retained status) until a person clears it
    status: ClassVar[bool] = False  # the retained status changes

    def payload(self) -> dict[str, Any]:
        """The event's own facts, JSON-ready (machine and time are the envelope's)."""
        skip = {"machine", "t"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, JobResult):
        return asdict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class StateChanged(MachineEvent):
    state: MachineState
    heating: bool = False  # a heat-and-wait holds the job now (a resumed job goes back to heating)
    kind: ClassVar[str] = "state"
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class JobStarted(MachineEvent):
    file: str
    size: int
    kind: ClassVar[str] = "job-started"


@dataclass(frozen=True, slots=True)
class FirstLine(MachineEvent):
    """The job's first line was answered: it is on the machine, its active time starts."""

    heating: bool
    kind: ClassVar[str] = "first-line"


@dataclass(frozen=True, slots=True)
class Progress(MachineEvent):
    used: dict[str, Any]
    kind: ClassVar[str] = "progress"


@dataclass(frozen=True, slots=True)
class Heating(MachineEvent):
    on: bool
    command: str = ""
    kind: ClassVar[str] = "heating"
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class JobFinished(MachineEvent):
    result: JobResult
    kind: ClassVar[str] = "job-finished"
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Telemetry(MachineEvent):
    temperatures: dict[str, tuple[float, float]]
    position: dict[str, float]
    grbl_state: str
    progress: float
    kind: ClassVar[str] = "telemetry"


@dataclass(frozen=True, slots=True)
class Fault(MachineEvent):
    reason: str
    code: str
    kind: ClassVar[str] = "fault"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Alarm(MachineEvent):
    code: int
    meaning: str
    kind: ClassVar[str] = "alarm"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class LinkLost(MachineEvent):
    reason: str
    kind: ClassVar[str] = "link-lost"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class DoorOpen(MachineEvent):
    state: str
    kind: ClassVar[str] = "door-open"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Stall(MachineEvent):
    silent_s: float
    safe_state_in_s: float
    kind: ClassVar[str] = "stall"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StallCleared(MachineEvent):
    kind: ClassVar[str] = "stall-cleared"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class MachineWarning(MachineEvent):
    text: str
    line: int | None
    kind: ClassVar[str] = "warning"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class FirmwareReset(MachineEvent):
    banner: str
    mid_job: bool
    kind: ClassVar[str] = "firmware-reset"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Action(MachineEvent):
    """A host action the firmware asked for (`//action:pause`)."""

    name: str
    args: str
    kind: ClassVar[str] = "action"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class EmergencyStop(MachineEvent):
    by: str
    acted_on_arrival: bool
    kind: ClassVar[str] = "emergency-stop"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SafeState(MachineEvent):
    reason: str
    actions: tuple[str, ...]
    kind: ClassVar[str] = "safe-state"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ScriptSent(MachineEvent):
    name: str
    lines: tuple[str, ...]
    kind: ClassVar[str] = "script"
    published: ClassVar[bool] = True


# ---- the machine console (console.py) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConsoleSent(MachineEvent):
    """A set-up action's lines went to the machine (jog, zero, probe, frame …), and who asked."""

    action: str
    by: str
    lines: tuple[str, ...]
    kind: ClassVar[str] = "console"
    published: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Probed(MachineEvent):
    """A Z probe ended: touched (Z zero set at the plate's thickness) or not (the machine alarms)."""

    touched: bool
    position: dict[str, float]
    plate_mm: float
    kind: ClassVar[str] = "probe"
    published: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PromptShown(MachineEvent):
    """The job waits for a person: what for (pause, tool-change, filament-change, user) and the words."""

    prompt_kind: str
    text: str
    tool: int | None = None
    line: int | None = None
    kind: ClassVar[str] = "prompt"
    published: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PromptAnswered(MachineEvent):
    by: str
    waited_s: float
    kind: ClassVar[str] = "prompt-answered"
    published: ClassVar[bool] = True
    status: ClassVar[bool] = True


# ---- power (the machine's plug thread, power/plug.py) ------------------------------------------------
@dataclass(frozen=True, slots=True)
class PowerSwitched(MachineEvent):
    """The machine's power (or its extraction's) was switched, and why."""

    on: bool
    reason: str
    device: str = "power"  # power | extraction
    kind: ClassVar[str] = "power"
    published: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PowerSample(MachineEvent):
    """What the plug read: relay state and watts (None: it does not measure). `at` is monotonic."""

    on: bool
    watts: float | None
    at: float
    kind: ClassVar[str] = "power-sample"


@dataclass(frozen=True, slots=True)
class PowerUnreachable(MachineEvent):
    reason: str
    safe_side: str  # closed: the machine takes no session or job until it answers | open: it may
    kind: ClassVar[str] = "power-unreachable"
    published: ClassVar[bool] = True
    alarm: ClassVar[bool] = True
    status: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PowerRestored(MachineEvent):
    kind: ClassVar[str] = "power-restored"
    published: ClassVar[bool] = True
    status: ClassVar[bool] = True
