"""Which of a manager's commands make sense for a machine as its status shows it.

One rule, read twice: the agent refuses a command its status does not offer (with the reason code
below), and the status carries the offered list so a dashboard shows only those buttons.
"""

from __future__ import annotations

from typing import Any

# The commands a dashboard shows as buttons, in the order it shows them.
MACHINE_ACTIONS = ("pause", "resume", "cancel", "confirm", "clear-alarms", "lock", "unlock", "estop")

# Why each is refused when the machine's status does not offer it (the reason code said back).
REFUSALS = {
    "pause": "not_printing",
    "resume": "not_paused",
    "cancel": "no_job",
    "confirm": "nothing_to_confirm",
    "clear-alarms": "no_alarms",
    "lock": "already_locked",
    "unlock": "not_locked",
    "estop": "not_connected",
}

_UNREACHABLE = ("disconnected",)  # an e-stop there would reach nothing: say so rather than pretend


def offered(status: dict[str, Any], streamed: bool = True) -> tuple[str, ...]:
    """The commands that make sense now, from the machine's status (its state, job, lock, alarms).
    A machine the agent does not stream to (power only) has no stop but its plug: no e-stop."""
    state, job = str(status.get("state")), status.get("job")
    fits = {
        "pause": state == "printing",
        "resume": state == "paused",
        "cancel": job is not None,
        "confirm": bool(status.get("needs_confirmation")),
        "clear-alarms": bool(status.get("alarms")),
        "lock": not status.get("locked") and not status.get("lock_pending"),
        "unlock": bool(status.get("locked") or status.get("lock_pending")),
        "estop": streamed and state not in _UNREACHABLE,
    }
    return tuple(name for name in MACHINE_ACTIONS if fits[name])


def refusal(command: str, status: dict[str, Any], streamed: bool = True) -> str | None:
    """The reason code for refusing `command` in this status, or None when it may run."""
    if command not in REFUSALS or command in offered(status, streamed):
        return None
    return REFUSALS[command]
