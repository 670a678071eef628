"""Who may use a machine now: one function, one reason code per refusal, evaluated in a fixed order.

`allowed` carries how long the session may last: until someone else's booking, or closing time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from .directory import Directory, Member

CODES = (
    "allowed", "unknown_badge", "not_trained", "training_expired", "supervisor_required", "booked_by_other",
    "booking_required", "outside_opening_hours", "machine_locked", "job_overruns_booking", "cache_too_old",
)  # fmt: skip
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class AccessPolicy:
    """Site rules from the `[access]` config table."""

    cache_max_age_days: float = 7.0
    managers_always: bool = True  # managers pass with an old cache and outside opening hours
    opening_hours: dict[str, tuple[time, time]] = field(
        default_factory=dict
    )  # day -> (open, close); none: always
    booking_required: tuple[str, ...] = ()  # machine ids that need a booking
    supervisor_window_s: float = 120.0
    session_idle_s: float = 900.0


@dataclass
class Decision:
    code: str
    member: Member | None = None
    allowed_until: datetime | None = None
    booking_id: str | None = None
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.code == "allowed"

    @property
    def member_id(self) -> str:
        """The member decided about ('' for an unknown badge)."""
        return self.member.id if self.member else ""

    def public(self) -> dict[str, Any]:
        """What may be shown and published: never the badge, only the member's id and name."""
        return {
            "code": self.code,
            "member_id": self.member.id if self.member else None,
            "member_name": self.member.name if self.member else None,
            "allowed_until": self.allowed_until.isoformat() if self.allowed_until else None,
            "booking_id": self.booking_id,
            "detail": self.detail,
        }


def decide(
    directory: Directory,
    policy: AccessPolicy,
    machine_id: str,
    machine_class: str,
    badge: str,
    now: datetime,
    locked: bool = False,
    job_estimate_s: float | None = None,
    supervised: bool = False,
) -> Decision:
    """The decision for a badge (keyed hash) at a machine, now (an aware datetime)."""
    member = directory.member_by_badge(badge)
    if member is None:
        return Decision("unknown_badge", detail="badge not in the directory")
    manager = member.has_role("manager")
    if locked and not manager:
        return Decision("machine_locked", member, detail="locked out for maintenance")
    meta = directory.meta()
    stale = meta is None or _age_days(meta["synced_at"], now) > policy.cache_max_age_days
    if stale and not (manager and policy.managers_always):
        age = "never synced" if meta is None else f"synced {_age_days(meta['synced_at'], now):.1f} days ago"
        return Decision("cache_too_old", member, detail=f"member directory {age}")
    if not manager:
        refusal = _training(member, machine_class, now, supervised)
        if refusal:
            return refusal
    closing = None if manager and policy.managers_always else _closing(policy, now)
    if closing is False:
        return Decision("outside_opening_hours", member, detail="the lab is closed now")
    horizon = now + timedelta(days=1)
    bookings = directory.bookings(machine_id, now, horizon)
    current = [b for b in bookings if b.starts <= now < b.ends]
    others_now = [b for b in current if b.member_id != member.id]
    own_now = next((b for b in current if b.member_id == member.id), None)
    if others_now and not manager:
        return Decision("booked_by_other", member, detail=f"booked until {others_now[0].ends.isoformat()}")
    if machine_id in policy.booking_required and own_now is None and not manager:
        return Decision("booking_required", member, detail="this machine needs a booking")
    limits = [b.starts for b in bookings if b.member_id != member.id and b.starts > now]
    if isinstance(closing, datetime):
        limits.append(closing)
    until = min(limits) if limits else None
    if job_estimate_s is not None and until is not None and now + timedelta(seconds=job_estimate_s) > until:
        minutes = (until - now).total_seconds() / 60
        detail = f"the job needs {job_estimate_s / 60:.0f} min; the machine is free for {minutes:.0f} min"
        return Decision("job_overruns_booking", member, until, detail=detail)
    return Decision("allowed", member, until, own_now.id if own_now else None)


def _training(member: Member, machine_class: str, now: datetime, supervised: bool) -> Decision | None:
    training = member.trainings.get(machine_class)
    if training is None:
        return Decision("not_trained", member, detail=f"no training for {machine_class}")
    if training.expires is not None and now > training.expires + timedelta(days=training.grace_days):
        return Decision("training_expired", member, detail=f"training expired {training.expires.date()}")
    if training.supervised and not supervised:
        return Decision("supervisor_required", member, detail="a trainer must badge in to supervise")
    return None


def _closing(policy: AccessPolicy, now: datetime) -> datetime | bool | None:
    """Closing time today (local), False when closed now, None when the site sets no hours."""
    if not policy.opening_hours:
        return None
    local = now.astimezone()
    hours = policy.opening_hours.get(DAYS[local.weekday()])
    if hours is None:
        return False
    opens, closes = (local.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0) for t in hours)
    if not opens <= local < closes:
        return False
    return closes


def _age_days(synced_at: str, now: datetime) -> float:
    from ..ledger.usage import parse_iso

    return (now - parse_iso(synced_at)).total_seconds() / 86400
