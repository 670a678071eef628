"""The job state machine and the clock that splits a job's time by state.

Every second of a job belongs to exactly one bucket, chosen by the state the job was in: that is the
whole definition of the time split (docs/usage-record.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Conflict

TERMINAL = ("completed", "cancelled", "failed", "interrupted")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("held", "starting", "cancelled"),
    "held": ("queued", "starting", "cancelled"),
    "starting": ("heating", "running", "paused", "waiting", "completed", "cancelled", "failed",
                 "interrupted"),
    "heating": ("running", "paused", "waiting", "completed", "cancelled", "failed", "interrupted"),
    "running": ("heating", "paused", "waiting", "completed", "cancelled", "failed", "interrupted"),
    "paused": ("running", "heating", "waiting", "cancelled", "failed", "interrupted"),
    "waiting": ("running", "heating", "paused", "completed", "cancelled", "failed", "interrupted"),
    **{t: () for t in TERMINAL},
}
BUCKET = {"starting": "idle_s", "heating": "heating_s", "running": "active_s", "paused": "paused_s",
          "waiting": "waiting_s"}  # fmt: skip
BUCKETS = ("active_s", "heating_s", "paused_s", "waiting_s", "idle_s")


class IllegalTransition(Conflict):
    """A job asked to go where its state machine does not lead."""

    code = "illegal-transition"


def check_transition(job_id: str, old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, ()):
        allowed = ", ".join(TRANSITIONS.get(old, ())) or "nothing (it has ended)"
        raise IllegalTransition(
            f"job {job_id}: {old} -> {new} is not allowed; from {old} it may go to {allowed}"
        )


@dataclass
class JobClock:
    """Seconds per bucket, advanced on a monotonic clock so wall-clock jumps change nothing."""

    state: str = "starting"
    since: float = 0.0
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))

    def move(self, state: str, now: float) -> None:
        self._charge(now)
        self.state = state

    def split(self, now: float) -> dict[str, float]:
        """The buckets as of `now`, plus `total_s` (their sum)."""
        self._charge(now)
        out = {k: round(v, 3) for k, v in self.spent.items()}
        out["total_s"] = round(sum(self.spent.values()), 3)
        return out

    def _charge(self, now: float) -> None:
        bucket = BUCKET.get(self.state)
        if bucket and now > self.since:
            self.spent[bucket] += now - self.since
        self.since = max(now, self.since)
