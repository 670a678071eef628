"""What people do to machines through the agent (cancel, lock, confirm, release, badge) and what they
see of them (status, telemetry, figures so far): the agent's public face, used by the API, the bus,
the kiosk and the guards. It owns nothing: it reads the pump's copies and the ledger, and posts to
the machines."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from .access.decide import Decision
from .access.service import Access
from .actions import offered, refusal
from .config import AgentConfig
from .console_service import job_outside_travel
from .errors import Conflict, InvalidInput, NotFound
from .i18n import msg
from .ledger import Ledger
from .ledger.appkeys import AppKeyRequests
from .ledger.keys import KeyBook, Pairing
from .ledger.states import TERMINAL
from .machine.console import Prompt
from .machine.events import MachineState
from .machine.worker import Machine
from .materials import from_snapshot, loaded
from .publisher import Publisher


def _prompt(prompt: Prompt | None) -> dict[str, Any] | None:
    """What a waiting job asks of a person, for the status (None: nothing)."""
    if prompt is None:
        return None
    return {"kind": prompt.kind, "text": prompt.text, "tool": prompt.tool, "line": prompt.line,
            "host": prompt.host, "since": prompt.since}  # fmt: skip


class BookingOverrun(Conflict):
    """A member's job would run past the end of their session (the next booking, closing time)."""

    code = "job_overruns_booking"


class Jobs(Protocol):
    """What Control needs of the job pump, the owner of running jobs and alarms."""

    def job_id(self, machine_id: str) -> str | None: ...
    def used(self, machine_id: str) -> dict[str, Any]: ...
    def figures(self, machine_id: str) -> dict[str, Any] | None: ...
    def alarms_of(self, machine_id: str) -> list[dict[str, Any]]: ...
    def mark_cancelled(self, machine_id: str, actor: str) -> bool: ...
    def lock_machine(self, machine_id: str, reason: str) -> bool: ...
    def clear_alarms(self, machine_id: str, actor: str) -> int: ...


class PowerStatus(Protocol):
    def status(self, machine_id: str) -> dict[str, Any] | None: ...


class Control:
    def __init__(
        self,
        config: AgentConfig,
        ledger: Ledger,
        machines: dict[str, Machine],
        pump: Jobs,
        publisher: Publisher,
        access: Access | None,
    ) -> None:
        self.config, self.ledger, self.machines = config, ledger, machines
        self.pump, self.publisher, self.access = pump, publisher, access
        self.power: PowerStatus | None = None

    # ---- commands from people ---------------------------------------------------------------------
    def cancel(self, machine_id: str, actor: str) -> bool:
        """Cancel the running job; who asked decides the stop type (member or manager)."""
        if not self.pump.mark_cancelled(machine_id, actor):
            return False
        self.machines[machine_id].cancel(actor)
        return True

    def command(self, cmd: dict[str, Any]) -> tuple[str, str]:
        """A verified manager command (bus or API): ('done' | 'refused', what happened)."""
        machine_id, actor, name = cmd["machine"], cmd["actor"], cmd["command"]
        if machine_id not in self.machines:
            return "refused", "unknown_machine"
        machine = self.machines[machine_id]
        role = "member" if actor == "member" else "manager"  # the API says "member" for a member's own job
        refused = self.refused(machine_id, name)
        if refused is not None:
            return "refused", refused
        if name == "estop":
            machine.emergency_stop(actor)
            self.pump.mark_cancelled(machine_id, role)
            return "done", "emergency stop sent"
        if name == "cancel":
            return ("done", "cancelling") if self.cancel(machine_id, role) else ("refused", "no_job")
        if name == "pause":
            if machine.state != MachineState.PRINTING:
                return "refused", "not_printing"
            machine.pause()
            return "done", "pausing"
        if name == "resume":
            if machine.state != MachineState.PAUSED:
                return "refused", "not_paused"
            machine.resume()
            return "done", "resuming"
        if name == "lock":
            return "done", self.lock(machine_id, actor, str(cmd["args"].get("reason", "maintenance")))
        if name == "unlock":
            return "done", self.unlock(machine_id, actor)
        if name == "clear-alarms":
            return "done", f"{self.clear_alarms(machine_id, actor)} alarm(s) cleared"
        if name == "pairing-code":
            try:
                digest = str(cmd["args"].get("code_sha256", ""))
                Pairing(KeyBook(self.ledger)).expect(machine_id, digest, actor)
            except InvalidInput as exc:
                return "refused", str(exc)
            self.ledger.audit(actor, "pairing-code", "made", machine_id)
            return "done", "pairing code accepted (ten minutes, once)"
        if name == "appkey-decision":
            return self.decide_appkey(machine_id, actor, cmd["args"])
        if name == "confirm":
            return (
                ("done", "confirmed")
                if self.confirm(machine_id, actor)
                else ("refused", "nothing_to_confirm")
            )
        return "refused", "unknown_command"

    def refused(self, machine_id: str, command: str) -> str | None:
        """Why `command` does not fit the machine's state now (a reason code), or None: the rule the
        status's offered actions come from (afn_agent/actions.py)."""
        return refusal(command, self.status(machine_id), self.machines[machine_id].profile.streamed)

    def decide_appkey(self, machine_id: str, actor: str, args: dict[str, Any]) -> tuple[str, str]:
        """A manager's decision on an application's key request, signed by the fleet dashboard."""
        grant, request_id = args.get("grant"), args.get("request")
        if not isinstance(grant, bool) or not isinstance(request_id, str):
            return "refused", "bad_arguments"
        try:
            row = AppKeyRequests(KeyBook(self.ledger)).decide(request_id, grant, actor, machine_id)
        except NotFound:
            return "refused", "no_such_request"
        said = {"request": request_id, "decision": row["decision"], "actor": actor}
        self.publisher.event(machine_id, "appkey_decided", said)
        return "done", str(row["decision"])

    def lock(self, machine_id: str, actor: str, reason: str) -> str:
        """Maintenance lock-out: at once when idle, else when the running job ends. Kept in the ledger."""
        busy = self.pump.lock_machine(machine_id, reason)
        self.ledger.audit(actor, "lock", "pending" if busy else "locked", machine_id, reason=reason)
        self.publisher.event(machine_id, "lock", {"by": actor, "reason": reason, "pending": busy})
        self.publisher.status_changed(machine_id)
        return "locked when the running job ends" if busy else "locked"

    def unlock(self, machine_id: str, actor: str) -> str:
        self.ledger.set_machine(machine_id, locked=0, lock_pending=0, lock_reason=None)
        self.ledger.audit(actor, "unlock", "unlocked", machine_id)
        self.publisher.event(machine_id, "unlock", {"by": actor})
        self.publisher.status_changed(machine_id)
        return "unlocked"

    def job_figures(self, machine_id: str) -> dict[str, Any] | None:
        """The running job's time split and material so far, and its price so far by the tariff."""
        from .ledger.tariff import price, quantities

        figures = self.pump.figures(machine_id)
        if figures is None:
            return None
        tariff = self.config.tariff_for(machine_id, from_snapshot(figures.get("material_preset")))
        figures["price_so_far"] = str(price(tariff, quantities(figures), "done_part"))
        figures["currency"] = tariff.currency
        return figures

    def running_job(self, machine_id: str) -> dict[str, Any] | None:
        job_id = self.pump.job_id(machine_id)
        return self.ledger.job(job_id) if job_id else None

    def release_job(self, job_id: str, actor: str, manager: bool = False) -> None:
        """A held job may run now: inside the machine's current session, or on a manager's word.
        A member's job that would run past the session's end raises BookingOverrun with the reason."""
        job = self.job(job_id)
        if outside := job_outside_travel(self.machines[job["machine_id"]], job):
            refusal = Conflict(msg("refused.job-travel", travel=outside), code="outside-travel")
            self.ledger.audit(actor, "job-release", "refused", job["machine_id"], job_id,
                              problem=str(refusal))  # fmt: skip
            raise refusal
        sessions = self.access.sessions if self.access else None
        session = sessions.current(job["machine_id"]) if sessions else None
        if sessions is not None and not manager and job["member_id"] is None and job["source"] != "cli":
            raise Conflict("nobody owns this upload yet: claim it first (it is then billed to you)",
                           code="unclaimed")  # fmt: skip
        if sessions is not None and session is not None and not manager:
            why = sessions.overrun(job["machine_id"], job)
            if why:
                raise BookingOverrun(why)
            if not sessions.join(session, job):
                raise Conflict(f"job {job_id} is no longer held for {session['member_id']}")
        else:
            self.ledger.release(
                job_id, f"started by {actor}", session["id"] if session else None, actor if manager else None
            )
        self.ledger.audit(actor, "job-release", "queued", job["machine_id"], job_id)

    def claim_job(self, job_id: str, member_id: str, actor: str) -> dict[str, Any]:
        """A member at the machine chooses an unclaimed upload: it becomes theirs, billed to them, and
        starts in their session. Refused (audited) when the machine takes only members' own uploads, when
        they do not hold the machine, or when it would overrun their session."""
        job = self.job(job_id)
        machine_id = job["machine_id"]
        sessions = self.access.sessions if self.access else None
        session = sessions.current(machine_id) if sessions else None
        problem = ""
        if job["state"] != "held" or job["member_id"] is not None:
            problem = "only an unclaimed upload waiting at the machine can be claimed"
        elif not self.config.machine(machine_id).claim_uploads:
            problem = f"{machine_id} takes only uploads sent with a member's own key (claim_uploads = false)"
        elif sessions is None or session is None or session["member_id"] != member_id:
            problem = "badge in at the machine first: a claim is made by the member holding it"
        elif why := sessions.overrun(machine_id, job):
            problem = why
        if problem:
            self.ledger.audit(
                actor, "job-claim", "refused", machine_id, job_id, member=member_id, problem=problem
            )
            raise Conflict(problem, code="claim-refused")
        assert sessions is not None and session is not None
        if not sessions.join(session, job, claimed=True):
            raise Conflict("another member claimed it first", code="claim-refused")
        self.ledger.audit(actor, "job-claim", "claimed", machine_id, job_id, member=member_id)
        self.publisher.event(machine_id, "job-claimed", {"job_id": job_id, "member_id": member_id})
        return self.job(job_id)

    def reassign_job(self, job_id: str, member_id: str | None, actor: str) -> dict[str, Any]:
        """A manager says whose job it is (a wrong claim, an upload for someone else): audited with the
        owner before and after. Not once it has ended: its record has gone to the booking system."""
        job = self.job(job_id)
        if job["state"] in TERMINAL:
            raise Conflict(f"job {job_id} has ended ({job['state']}): its record is issued; correct it in "
                           "the booking system")  # fmt: skip
        self.ledger.set_owner(job_id, member_id)
        change = {"before": job["member_id"], "after": member_id}
        self.ledger.audit(actor, "job-reassign", "reassigned", job["machine_id"], job_id, **change)
        self.publisher.event(job["machine_id"], "job-reassigned", {"job_id": job_id, **change, "by": actor})
        return self.job(job_id)

    def remove_job(self, job_id: str, actor: str) -> None:
        """Take a waiting job out, and its file. On a full disk the file goes first: the space it frees
        lets the ledger record the removal (a manager's DELETE is how a full spool is emptied)."""
        job = self.job(job_id)
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
        self.publisher.status_changed(job["machine_id"])  # its queue is shorter

    def job(self, job_id: str) -> dict[str, Any]:
        """A job from the ledger, or NotFound (404)."""
        job = self.ledger.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def confirm(self, machine_id: str, actor: str) -> bool:
        """A person has checked the machine (bed cleared, or after a crash recovery): it may run again."""
        row = self.ledger.machine(machine_id)
        if not row or not row["needs_confirmation"]:
            return False
        self.ledger.set_machine(machine_id, needs_confirmation=None)
        self.ledger.audit(actor, "confirm", row["needs_confirmation"], machine_id)
        self.publisher.event(machine_id, "confirmed", {"by": actor, "what": row["needs_confirmation"]})
        self.publisher.status_changed(machine_id)
        return True

    def clear_alarms(self, machine_id: str, actor: str) -> int:
        """A person has read the machine's alarms and dealt with them: they leave its status (the ledger
        keeps them, with who cleared them)."""
        cleared = self.pump.clear_alarms(machine_id, actor)
        self.ledger.audit(actor, "clear-alarms", "cleared", machine_id, count=cleared)
        if cleared:
            self.publisher.event(machine_id, "alarms-cleared", {"by": actor, "count": cleared})
            self.publisher.status_changed(machine_id)
        return cleared

    def set_material(self, machine_id: str, name: str, actor: str) -> dict[str, Any]:
        """What is loaded in the machine now (a preset): the next jobs are weighed and priced by it. Not
        while a job runs: that job is billed by what it started with."""
        preset = self.config.preset(name)
        if preset is None:
            known = ", ".join(sorted(self.config.materials))
            raise InvalidInput(f"no material preset {name!r} (presets: {known})")
        if self.pump.job_id(machine_id) is not None:
            raise Conflict("a job is running; change the material when it has ended")
        self.ledger.set_machine(machine_id, material=preset.name)
        self.ledger.audit(actor, "material", preset.name, machine_id, density=preset.density_g_cm3)
        self.publisher.event(machine_id, "material", {"by": actor, **preset.snapshot()})
        self.publisher.status_changed(machine_id)
        return preset.snapshot()

    def badge(self, machine_id: str, uid: str) -> Decision:
        """A badge read at a machine (reader thread, kiosk or demo): the access decision."""
        if self.access is None:
            raise RuntimeError("no [access] in the configuration")
        decision = self.access.badge_uid(machine_id, uid)
        self.publisher.status_changed(machine_id)
        return decision

    def status(self, machine_id: str) -> dict[str, Any]:
        """The retained status of a machine: state, who, what job, progress, ETA, alarms (no badge UID)."""
        machine = self.machines[machine_id]
        row = self.ledger.machine(machine_id) or {}
        job_id = self.pump.job_id(machine_id)
        job = self.ledger.job(job_id) if job_id else None
        used = self.pump.used(machine_id)
        out: dict[str, Any] = {
            "machine": machine_id,
            "agent": self.config.agent_id,
            "class": row.get("class"),
            "state": machine.state,
            "locked": bool(row.get("locked")),
            "lock_pending": bool(row.get("lock_pending")),
            "lock_reason": row.get("lock_reason"),
            "needs_confirmation": row.get("needs_confirmation"),
            "material": self._material(machine_id),
            "alarms": self.pump.alarms_of(machine_id),
            "prompt": _prompt(machine.prompt),
            "work_offset": dict(machine.work_offset) or None,
            "power": self.power.status(machine_id) if self.power is not None else None,
            "session": self._session_status(machine_id),
            "job": None,
            "queued": self.ledger.waiting(machine_id),
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
        out["actions"] = list(offered(out, machine.profile.streamed))
        return out

    def _material(self, machine_id: str) -> str | None:
        preset = loaded(self.config, self.ledger, machine_id)
        m = self.config.find(machine_id)
        return preset.name if preset else (m.material if m else None)

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
