"""Sessions at a machine: badge in, supervised first uses, badge out, idle timeout.

A session is the member's permission to run jobs on one machine until `allowed_until`; it is written to
the ledger, and every badge decision goes to the audit log (with the member id, never the badge).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..ledger import Ledger
from ..ledger.usage import iso, parse_iso, utc_now
from .decide import AccessPolicy, Decision, decide
from .directory import Directory

Emit = Callable[[str, str, dict[str, Any]], None]  # (machine id, event type, data)


@dataclass
class Pending:
    """A member waiting for a trainer's badge."""

    member_id: str
    badge: str
    deadline: datetime


class Sessions:
    """Badge handling for every machine of one agent; thread-safe."""

    def __init__(
        self,
        ledger: Ledger,
        directory: Directory,
        policy: AccessPolicy,
        classes: dict[str, str],
        emit: Emit,
        auto_start: dict[str, bool] | None = None,
    ) -> None:
        self.ledger = ledger
        self.directory = directory
        self.policy = policy
        self.classes = classes  # machine id -> machine class
        self.auto_start = auto_start or {}  # machine id -> held jobs start on badge-in (no kiosk Start)
        self.emit = emit
        self.pending: dict[str, Pending] = {}
        self.last_activity: dict[str, datetime] = {}
        self._refused_jobs: set[str] = set()
        self.unavailable: Callable[[str], str] = lambda machine_id: ""  # why no session may open (power)
        self._lock = threading.RLock()

    def current(self, machine_id: str) -> dict[str, Any] | None:
        row = self.ledger.conn.execute(
            "SELECT * FROM sessions WHERE machine_id=? AND closed_at IS NULL ORDER BY opened_at DESC LIMIT 1",
            (machine_id,),
        ).fetchone()
        return dict(row) if row else None

    def badge(self, machine_id: str, badge: str, now: datetime | None = None) -> Decision:
        """A badge read at a machine: open, supervise, close or refuse; returns the decision."""
        now = now or utc_now()
        with self._lock:
            session = self.current(machine_id)
            member = self.directory.member_by_badge(badge)
            if session and member and member.id == session["member_id"]:
                self.close(machine_id, "badge-out", now)
                return self._record(machine_id, Decision("allowed", member, detail="badged out"), "badge-out")
            wait = self.pending.get(machine_id)
            if wait and now <= wait.deadline and member and member.id != wait.member_id:
                return self._supervise(machine_id, wait, badge, now)
            if session:
                other = Decision(
                    "booked_by_other", member, detail=f"machine in use by {session['member_id']}"
                )
                return self._record(machine_id, other, "refused")
            decision = self._decide(machine_id, badge, now)
            if decision.code == "supervisor_required":
                self.pending[machine_id] = Pending(
                    decision.member_id, badge, now + timedelta(seconds=self.policy.supervisor_window_s)
                )
                return self._record(machine_id, decision, "waiting-supervisor")
            if decision.allowed:
                self._open(machine_id, decision, None, now)
                return self._record(machine_id, decision, "opened")
            return self._record(machine_id, decision, "refused")

    def _decide(self, machine_id: str, badge: str, now: datetime, supervised: bool = False) -> Decision:
        machine = self.ledger.machine(machine_id) or {}
        member = self.directory.member_by_badge(badge)
        estimate = self._held_estimate(machine_id, member.id) if member else None
        unavailable = self.unavailable(machine_id)
        locked = bool(machine.get("locked")) or bool(unavailable)
        decision = decide(
            self.directory, self.policy, machine_id, self.classes[machine_id], badge, now,
            locked=locked, job_estimate_s=estimate, supervised=supervised,
        )  # fmt: skip
        if unavailable and decision.code == "machine_locked":
            decision.detail = unavailable
        return decision

    def _supervise(self, machine_id: str, wait: Pending, trainer_badge: str, now: datetime) -> Decision:
        trainer = self.directory.member_by_badge(trainer_badge)
        machine_class = self.classes[machine_id]
        t = trainer.trainings.get(machine_class) if trainer else None
        qualified = trainer is not None and (
            trainer.has_role("manager") or bool(trainer.has_role("trainer") and t and not t.supervised)
        )
        if trainer is None or not qualified:
            refused = Decision(
                "supervisor_required", trainer, detail="that badge cannot supervise this machine"
            )
            return self._record(machine_id, refused, "refused")
        del self.pending[machine_id]
        decision = self._decide(machine_id, wait.badge, now, supervised=True)
        if decision.allowed:
            self._open(machine_id, decision, trainer.id, now)
            decision.detail = f"supervised by {trainer.id}"
            return self._record(machine_id, decision, "opened", supervisor=trainer.id)
        return self._record(machine_id, decision, "refused", supervisor=trainer.id)

    def _open(self, machine_id: str, decision: Decision, supervisor: str | None, now: datetime) -> None:
        session_id = str(uuid.uuid4())
        with self.ledger.tx() as c:
            c.execute(
                "INSERT INTO sessions(id, machine_id, member_id, supervisor_id, booking_id, opened_at, "
                "allowed_until) VALUES(?,?,?,?,?,?,?)",
                (session_id, machine_id, decision.member_id, supervisor, decision.booking_id, iso(now),
                 iso(decision.allowed_until) if decision.allowed_until else None),
            )  # fmt: skip
        self.last_activity[machine_id] = now
        self.release_held(machine_id, now)

    def close(self, machine_id: str, reason: str, now: datetime | None = None) -> bool:
        now = now or utc_now()
        with self._lock, self.ledger.tx() as c:
            n = c.execute(
                "UPDATE sessions SET closed_at=?, close_reason=? WHERE machine_id=? AND closed_at IS NULL",
                (iso(now), reason, machine_id),
            ).rowcount
        if n:
            self.emit(machine_id, "session-closed", {"reason": reason})
        return bool(n)

    def touch(self, machine_id: str, now: datetime | None = None) -> None:
        """Something happened in the session (a job ran, a button was pressed): not idle."""
        self.last_activity[machine_id] = now or utc_now()

    def close_idle(self, busy: set[str], now: datetime | None = None) -> list[str]:
        """Close sessions with no job and no activity for `session_idle_s`; drop stale supervision waits."""
        now = now or utc_now()
        closed = []
        with self._lock:
            for machine_id, wait in list(self.pending.items()):
                if now > wait.deadline:
                    del self.pending[machine_id]
            for machine_id in self.classes:
                if machine_id in busy:
                    self.last_activity[machine_id] = now
                    continue
                last = self.last_activity.get(machine_id)
                if (
                    last
                    and (now - last).total_seconds() > self.policy.session_idle_s
                    and self.current(machine_id)
                ):
                    self.close(machine_id, "idle-timeout", now)
                    closed.append(machine_id)
        return closed

    def release_held(self, machine_id: str, now: datetime | None = None) -> None:
        """On a machine that starts on badge-in, the session member's own held jobs go now, if they end
        before the session must. Unclaimed uploads never do: only an explicit claim makes one theirs
        (they were once started under whoever badged in next, and billed to them)."""
        session = self.current(machine_id)
        if session is None or not self.auto_start.get(machine_id, True):
            return
        held = self.ledger.jobs(machine_id, ("held",))
        for job in (j for j in held if j["member_id"] == session["member_id"] and j["source"] != "cli"):
            if self.overrun(machine_id, job, now) is None:
                self.join(session, job)

    def overrun(self, machine_id: str, job: dict[str, Any], now: datetime | None = None) -> str | None:
        """Why the job may not start in the open session (it would run past its end), or None."""
        session = self.current(machine_id)
        if session is None or not session["allowed_until"]:
            return None
        now = now or utc_now()
        until = parse_iso(session["allowed_until"])
        estimate = json.loads(job["estimate_json"]).get("time_s", 0.0)
        if now + timedelta(seconds=estimate) <= until:
            return None
        minutes = (until - now).total_seconds() / 60
        detail = f"the job needs {estimate / 60:.0f} min; the session ends in {minutes:.0f} min"
        if job["id"] not in self._refused_jobs:
            self._refused_jobs.add(job["id"])
            member = self.directory.member(session["member_id"])
            self._record(
                machine_id, Decision("job_overruns_booking", member, until, detail=detail), "job-held"
            )
        return detail

    def join(self, session: dict[str, Any], job: dict[str, Any], claimed: bool = False) -> bool:
        """A held job of the session's member runs inside the session; with `claimed`, an unclaimed
        upload the member chose becomes theirs first. False when the job is no longer that (another
        claim came first, or it left the hold)."""
        member = session["member_id"]
        with self.ledger.tx() as c:
            owner_ok = "member_id IS NULL" if claimed else "member_id=?"
            changed = c.execute(
                "UPDATE jobs SET state='queued', session_id=?, member_id=?, "
                "supervisor_id=COALESCE(supervisor_id, ?), booking_id=COALESCE(booking_id, ?) "
                f"WHERE id=? AND state='held' AND {owner_ok}",
                (session["id"], member, session["supervisor_id"], session["booking_id"], job["id"],
                 *(() if claimed else (member,))),
            ).rowcount  # fmt: skip
            if changed:
                cause = f"claimed by {member}" if claimed else f"session of {member}"
                c.execute(
                    "INSERT INTO job_transitions(job_id, from_state, to_state, cause, at) VALUES(?,?,?,?,?)",
                    (job["id"], "held", "queued", cause, iso(utc_now())),
                )
        return bool(changed)

    def may_start(self, machine_id: str, job: dict[str, Any]) -> bool:
        """A member's job runs only inside that member's open session on that machine; an unclaimed
        upload not at all (it waits for a claim or a manager)."""
        if job["source"] == "cli" or job["released_by_manager"]:
            return True
        if not job["member_id"]:
            return False
        session = self.current(machine_id)
        return bool(session and session["member_id"] == job["member_id"])

    def _held_estimate(self, machine_id: str, member_id: str) -> float | None:
        row = self.ledger.conn.execute(
            "SELECT estimate_json FROM jobs WHERE machine_id=? AND member_id=? AND state='held' "
            "ORDER BY queue_pos LIMIT 1",
            (machine_id, member_id),
        ).fetchone()
        return json.loads(row[0]).get("time_s") if row else None

    def _record(self, machine_id: str, decision: Decision, action: str, **extra: Any) -> Decision:
        data = {**decision.public(), "action": action, **extra}
        actor = decision.member_id if decision.member else "unknown"
        self.ledger.audit(actor, "badge", decision.code, machine_id, action, **data)
        self.emit(machine_id, "badge", data)
        return decision
