"""Events the protocol cores hand to whoever drives them.

Small frozen dataclasses, as in h11: the core never calls out, it only returns these.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every protocol event."""


@dataclass(frozen=True, slots=True)
class LineAcked(Event):
    """The firmware accepted and queued a line of the job (or a host command)."""

    seq: int
    text: str
    tag: object = None
    size: int = 0  # its bytes on the wire (framing included): the machine thread's pacing counts them


@dataclass(frozen=True, slots=True)
class LinesAcked(Event):
    """Lines `first`, `first + 1`... accepted in a row, said once: a burst of the compiled exchange
    answers a hundred lines, and an object per line cost more than the exchange itself."""

    first: int
    texts: tuple[str, ...]
    tags: tuple[object, ...]
    sizes: tuple[int, ...]  # each line's bytes on the wire

    def each(self) -> list[LineAcked]:
        """The same, line by line: what the Python path says for them."""
        return [
            LineAcked(self.first + i, text, tag, size)
            for i, (text, tag, size) in enumerate(zip(self.texts, self.tags, self.sizes, strict=True))
        ]


@dataclass(frozen=True, slots=True)
class ResendRequested(Event):
    """The firmware rejected a line; everything from `line` on is sent again."""

    line: int
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Busy(Event):
    """Keepalive during a long command; resets the ok-watchdog."""

    text: str


@dataclass(frozen=True, slots=True)
class Temperatures(Event):
    """One temperature report: heater name -> (actual, target)."""

    heaters: dict[str, tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Position(Event):
    """Machine position in mm (M114 or GRBL MPos/WPos)."""

    axes: dict[str, float]


@dataclass(frozen=True, slots=True)
class FirmwareInfo(Event):
    """Identity and capabilities reported by the firmware (M115, `$I`, banner)."""

    name: str
    capabilities: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FirmwareReset(Event):
    """The firmware printed its start banner: it rebooted, and forgot everything it was told."""

    banner: str
    mid_job: bool


@dataclass(frozen=True, slots=True)
class Fault(Event):
    """The job cannot go on (firmware killed, thermal fault, reset mid-job, alarm, no answer)."""

    reason: str
    code: str


@dataclass(frozen=True, slots=True)
class FirmwareWarning(Event):
    """Something worth a log line that does not stop the job (unknown command, error:N on GRBL)."""

    text: str
    seq: int | None = None
    tag: object = None


@dataclass(frozen=True, slots=True)
class Message(Event):
    """Free text from the firmware (echo:, [MSG:], //action:notification)."""

    text: str


@dataclass(frozen=True, slots=True)
class ActionCommand(Event):
    """A `//action:<name> <args>` host action command (pause, resume, cancel, ...)."""

    name: str
    args: str


@dataclass(frozen=True, slots=True)
class MachineStatus(Event):
    """A GRBL status report `<State|...>`, parsed."""

    state: str
    substate: int | None
    fields: dict[str, str]
    planner_free: int | None = None
    rx_free: int | None = None


@dataclass(frozen=True, slots=True)
class Alarm(Event):
    """GRBL `ALARM:n`, with its meaning in words."""

    code: int
    meaning: str


@dataclass(frozen=True, slots=True)
class Setting(Event):
    """One `$n=value` line of a GRBL settings dump."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ProbeSent(Event):
    """The ok-watchdog sent a probe because the firmware went quiet."""

    attempt: int


@dataclass(frozen=True, slots=True)
class ProbeResult(Event):
    """GRBL `[PRB:x,y,z:1]`: where a probe cycle stopped (machine coordinates), and whether it touched."""

    position: dict[str, float]
    touched: bool


@dataclass(frozen=True, slots=True)
class WorkOffset(Event):
    """The active work offset (GRBL's `WCO:` status field): work position = machine position − offset."""

    axes: dict[str, float]


@dataclass(frozen=True, slots=True)
class UserWait(Event):
    """The firmware holds the job for a person: a program pause (M0/M1) or Marlin's `paused for user`."""

    text: str  # the waiting line
    tag: object = None


@dataclass(frozen=True, slots=True)
class HostPrompt(Event):
    """Marlin's host prompt (HOST_PROMPT_SUPPORT): `//action:prompt_begin <words>`, its buttons, then
    `prompt_show`: what the firmware asks a person, in its own words."""

    text: str
    buttons: tuple[str, ...] = ()
