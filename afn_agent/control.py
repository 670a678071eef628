"""What people do to machines through the agent (cancel, lock, confirm, release, badge) and what they
see of them (status, telemetry, figures so far): the agent's public face, used by the API, the bus and
the kiosk. A mixin of `Agent`, which holds the state these methods read."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Conflict
from .ledger import JobClock


class BookingOverrun(Conflict):
    """A member's job would run past the end of their session (the next booking, closing time)."""

    code = "job_overruns_booking"


@dataclass
class RunningJob:
    """A job on a machine, as the pump tracks it between checkpoints."""

    job_id: str
    clock: JobClock
    used: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: float = 0.0
    cancelled_by: str = ""


class AgentControl:
    # ---- commands from people ---------------------------------------------------------------------
    def cancel(self, machine_id: str, actor: str) -> bool:
        """Cancel the running job; who asked decides the stop type (member or manager)."""
        with self._lock:
            run = self.running.get(machine_id)
            if run is None:
                return False
            run.cancelled_by = actor
        self.machines[machine_id].cancel(actor)
        return True

    def command(self, cmd: dict[str, Any]) -> tuple[str, str]:
        """A verified manager command (bus or API): ('done' | 'refused', what happened)."""
        machine_id, actor, name = cmd["machine"], cmd["actor"], cmd["command"]
        if machine_id not in self.machines:
            return "refused", "unknown_machine"
        machine = self.machines[machine_id]
        role = "member" if actor == "member" else "manager"  # the API says "member" for a member's own job
        if name == "estop":
            machine.emergency_stop(actor)
            with self._lock:
                if machine_id in self.running:
                    self.running[machine_id].cancelled_by = role
            return "done", "emergency stop sent"
        if name == "cancel":
            return ("done", "cancelling") if self.cancel(machine_id, role) else ("refused", "no_job")
        if name == "pause":
            if machine.state != "printing":
                return "refused", "not_printing"
            machine.pause()
            return "done", "pausing"
        if name == "resume":
            if machine.state != "paused":
                return "refused", "not_paused"
            machine.resume()
            return "done", "resuming"
        if name == "lock":
            return "done", self.lock(machine_id, actor, str(cmd["args"].get("reason", "maintenance")))
        if name == "unlock":
            return "done", self.unlock(machine_id, actor)
        if name == "confirm":
            return (
                ("done", "confirmed")
                if self.confirm(machine_id, actor)
                else ("refused", "nothing_to_confirm")
            )
        return "refused", "unknown_command"

    def lock(self, machine_id: str, actor: str, reason: str) -> str:
        """Maintenance lock-out: at once when idle, else when the running job ends. Kept in the ledger."""
        with self._lock:
            busy = machine_id in self.running
            self.ledger.set_machine(
                machine_id, lock_reason=reason, **({"lock_pending": 1} if busy else {"locked": 1})
            )
        self.ledger.audit(actor, "lock", "pending" if busy else "locked", machine_id, reason=reason)
        self.publish_event(machine_id, "lock", {"by": actor, "reason": reason, "pending": busy})
        if self.bus is not None:
            self.bus.status_changed(machine_id)
        return "locked when the running job ends" if busy else "locked"

    def unlock(self, machine_id: str, actor: str) -> str:
        self.ledger.set_machine(machine_id, locked=0, lock_pending=0, lock_reason=None)
        self.ledger.audit(actor, "unlock", "unlocked", machine_id)
        self.publish_event(machine_id, "unlock", {"by": actor})
        if self.bus is not None:
            self.bus.status_changed(machine_id)
        return "unlocked"

    def job_figures(self, machine_id: str) -> dict[str, Any] | None:
        """The running job's time split and material so far, and its price so far by the tariff."""
        from .ledger.tariff import price, quantities

        with self._lock:
            run = self.running.get(machine_id)
            if run is None:
                return None
            m = self._machine_config(machine_id)
            figures = figures_of(run, time.monotonic(), m.material if m else "filament")
        tariff = self.config.tariffs[m.tariff] if m else self.config.tariffs["default"]
        figures["price_so_far"] = str(price(tariff, quantities(figures), "done_part"))
        figures["currency"] = tariff.currency
        return figures

    def running_job(self, machine_id: str) -> dict[str, Any] | None:
        with self._lock:
            run = self.running.get(machine_id)
        return self.ledger.job(run.job_id) if run else None

    def release_job(self, job_id: str, actor: str, manager: bool = False) -> None:
        """A held job may run now: inside the machine's current session, or on a manager's word.
        A member's job that would run past the session's end raises BookingOverrun with the reason."""
        job = self.ledger.job(job_id)
        session = self.access.sessions.current(job["machine_id"]) if self.access else None
        if session is not None and not manager:
            why = self.access.sessions.overrun(job["machine_id"], job)
            if why:
                raise BookingOverrun(why)
            self.access.sessions.join(session, job)
        else:
            self.ledger.release(
                job_id, f"started by {actor}", session["id"] if session else None, actor if manager else None
            )
        self.ledger.audit(actor, "job-release", "queued", job["machine_id"], job_id)

    def remove_job(self, job_id: str, actor: str) -> None:
        """Take a waiting job out, and its file. On a full disk the file goes first: the space it frees
        lets the ledger record the removal (a manager's DELETE is how a full spool is emptied)."""
        job = self.ledger.job(job_id)
        try:
            self.ledger.withdraw(job_id, f"removed by {actor}")
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            Path(job["path"]).unlink(missing_ok=True)
            self.ledger.withdraw(job_id, f"removed by {actor}")
        Path(job["path"]).unlink(missing_ok=True)
        self.ledger.file_removed(job_id)
        self.ledger.audit(actor, "job-remove", "removed", job["machine_id"], job_id)

    def confirm(self, machine_id: str, actor: str) -> bool:
        """A person has checked the machine (bed cleared, or after a crash recovery): it may run again."""
        row = self.ledger.machine(machine_id)
        if not row or not row["needs_confirmation"]:
            return False
        self.ledger.set_machine(machine_id, needs_confirmation=None)
        self.ledger.audit(actor, "confirm", row["needs_confirmation"], machine_id)
        self.publish_event(machine_id, "confirmed", {"by": actor, "what": row["needs_confirmation"]})
        if self.bus is not None:
            self.bus.status_changed(machine_id)
        return True

    def badge(self, machine_id: str, uid: str) -> Any:
        """A badge read at a machine (reader thread, kiosk or demo): the access decision."""
        if self.access is None:
            raise RuntimeError("no [access] in the configuration")
        decision = self.access.badge_uid(machine_id, uid)
        if self.bus is not None:
            self.bus.status_changed(machine_id)
        return decision

    def _access_event(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        if machine_id == "_directory":  # not a machine's: the audit log keeps it
            self.ledger.audit("agent", kind, data.get("reason", "ok"), None, None, **data)
            return
        self.publish_event(machine_id, kind, data)

    def _apply_pending_lock(self, machine_id: str) -> None:
        row = self.ledger.machine(machine_id)
        if row and row["lock_pending"]:
            self.ledger.set_machine(machine_id, locked=1, lock_pending=0)
            self.publish_event(
                machine_id, "lock", {"by": "agent", "reason": row["lock_reason"], "pending": False}
            )

    def _blocked(self, machine_id: str) -> bool:
        row = self.ledger.machine(machine_id)
        return bool(row and (row["locked"] or row["needs_confirmation"]))

    def status(self, machine_id: str) -> dict[str, Any]:
        """The retained status of a machine: state, who, what job, progress, ETA, alarms (no badge UID)."""
        machine = self.machines[machine_id]
        row = self.ledger.machine(machine_id) or {}
        with self._lock:
            run = self.running.get(machine_id)
            job = self.ledger.job(run.job_id) if run else None
            used = dict(run.used) if run else {}
        out: dict[str, Any] = {
            "machine": machine_id,
            "agent": self.config.agent_id,
            "class": row.get("class"),
            "state": machine.state,
            "locked": bool(row.get("locked")),
            "lock_pending": bool(row.get("lock_pending")),
            "lock_reason": row.get("lock_reason"),
            "needs_confirmation": row.get("needs_confirmation"),
            "alarms": self.alarms.get(machine_id, []),
            "session": self._session_status(machine_id),
            "job": None,
            "t": time.time(),
        }
        if job is not None:
            estimate = json.loads(job["estimate_json"] or "{}")
            progress = used.get("done_fraction", 0.0)
            done_s = estimate.get("time_s", 0.0) * progress
            out["job"] = {
                "id": job["id"],
                "name": job["name"],
                "state": job["state"],
                "member_id": job["member_id"],
                "started_at": job["started_at"],
                "progress": round(progress, 4),
                "eta_s": round(max(estimate.get("time_s", 0.0) - done_s, 0.0), 1),
            }
        return out

    def _session_status(self, machine_id: str) -> dict[str, Any] | None:
        """Who holds the machine now: member id and display name (never a badge)."""
        if self.access is None or (session := self.access.sessions.current(machine_id)) is None:
            return None
        member = self.access.directory.member(session["member_id"])
        return {
            "member_id": session["member_id"],
            "member_name": member.name if member else None,
            "supervisor_id": session["supervisor_id"],
            "opened_at": session["opened_at"],
            "allowed_until": session["allowed_until"],
        }

    def telemetry(self, machine_id: str) -> dict[str, Any]:
        snap = self.machines[machine_id].snapshot()
        keys = ("state", "temperatures", "position", "grbl_state", "progress", "window_bytes", "planner_free")
        out = {k: snap[k] for k in keys}
        out["t"] = time.time()
        return out


def figures_of(run: RunningJob, now: float, material: str = "filament") -> dict[str, Any]:
    """A checkpoint: the time split as of now and what the acknowledged lines used."""
    figures = run.clock.split(now)
    used = run.used
    figures.update(
        material_per_tool=used.get("material_per_tool", {}),
        material_mm=used.get("material_mm", 0.0),
        material_g=used.get("material_g", 0.0),
        material_kind=material,
        beam_on_s=used.get("beam_on_s", 0.0),
        spindle_on_s=used.get("spindle_on_s", 0.0),
        done_fraction=used.get("done_fraction", 0.0),
        lines=used.get("lines", 0),
    )
    return figures
