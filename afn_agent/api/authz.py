"""Who may do what, decided in one place for every route, native (`/v1`) and OctoPrint-compatible alike.

The OctoPrint routes once had their own checks and let a member pause or cancel another member's job
with no audit row. Now each route names an `Act`; `Gate.allow` checks the role, the key's machines and,
for acts on a job, that the caller owns it. A refusal of a state-changing act is audited, and so is
every state-changing act that goes through (`Gate.record`).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from .auth import Authenticator, Caller

if TYPE_CHECKING:
    from ..agent import Agent


class Act(Enum):
    """What a route does, as the audit log names it."""

    READ = "read"  # machines, jobs, quotes, files
    UPLOAD = "upload"
    CONTROL = "control"  # pause, resume, cancel or stop the running job
    RELEASE = "release"  # start a held job
    REMOVE = "remove"  # take a job out of the queue
    CONFIRM = "confirm"  # a person says the machine is ready
    MANAGE = "manage"  # lock, unlock, reorder, (re)connect
    USAGE = "usage"  # read the usage records
    ACK = "ack"  # acknowledge usage records
    DIRECTORY = "directory"  # push the member directory
    OVERSEE = "oversee"  # read the audit log and the sessions
    SCREEN = "screen"  # the kiosk's view of one machine
    KEYS = "keys"  # a member's own slicer keys: make, list, revoke
    CLAIM = "claim"  # make an unclaimed upload one's own (and start it)
    CONSOLE = "console"  # set the machine up (jog, zero, probe, frame, preheat …), answer its prompts
    APPKEY = "appkey"  # ask for an application key (AppKeys flow; anyone may, a key shown must fit)


PEOPLE = ("manager", "session", "kiosk")
ROLES: dict[Act, tuple[str, ...]] = {
    Act.READ: ("manager", "session", "kiosk", "booking", "slicer", "viewer"),
    Act.UPLOAD: ("slicer", "manager", "session", "kiosk"),
    Act.CONTROL: PEOPLE,
    Act.RELEASE: PEOPLE,
    Act.REMOVE: PEOPLE,
    Act.CONFIRM: PEOPLE,
    Act.MANAGE: ("manager",),
    Act.USAGE: ("booking", "manager"),
    Act.ACK: ("booking",),
    Act.DIRECTORY: ("booking", "manager"),
    Act.OVERSEE: ("manager",),
    Act.SCREEN: ("kiosk", "manager", "session"),
    Act.KEYS: ("session", "manager"),
    Act.CLAIM: ("session",),  # the member holding the machine (the kiosk acts with their session token)
    Act.CONSOLE: PEOPLE,  # the session's member or its trainer, the kiosk while a session is open, a manager
    Act.APPKEY: ("manager", "session", "kiosk", "booking", "slicer", "viewer"),
}
CHANGES = frozenset(ROLES) - {Act.READ, Act.USAGE, Act.OVERSEE, Act.SCREEN}
OWNED = frozenset({Act.CONTROL, Act.RELEASE, Act.REMOVE})  # on one job: its owner, or a manager


class Gate:
    """The one authorisation function (`allow`) and the audit of what it let through (`record`)."""

    def __init__(self, agent: Agent, auth: Authenticator) -> None:
        self.agent, self.auth = agent, auth

    def allow(
        self,
        request: Request,
        act: Act,
        *,
        machine: str | None = None,
        job: dict[str, Any] | None = None,
        action: str = "",
    ) -> Caller:
        """The caller if it may do `act` on `machine` (or on `job`); 401 or 403 otherwise. For OWNED acts
        a None job (nothing runs) leaves only a manager. Refusals of state-changing acts are audited."""
        caller = self._caller(request, act, action, machine)
        self._check(caller, act, action, machine or (job["machine_id"] if job else None), job)
        return caller

    def allow_job(
        self, request: Request, act: Act, job_id: str, action: str = ""
    ) -> tuple[Caller, dict[str, Any]]:
        """`allow` on the job `job_id`, and that job: 404 if there is none, told only to a caller whose
        role may act at all."""
        caller = self._caller(request, act, action, None, job_id)
        job = self.agent.control.job(job_id)  # NotFound (404)
        self._check(caller, act, action, job["machine_id"], job)
        return caller, job

    def _caller(
        self, request: Request, act: Act, action: str, machine: str | None, job_id: str | None = None
    ) -> Caller:
        caller = self.auth.identify(request)
        if caller is None:
            raise HTTPException(401, "a valid API key is required")
        if caller.role not in ROLES[act]:
            self._refuse(caller, act, action, machine, job_id, f"the {caller.role} role may not do this")
        return caller

    def _check(
        self, caller: Caller, act: Act, action: str, machine: str | None, job: dict[str, Any] | None
    ) -> None:
        problem = self._problem(caller, act, machine, job)
        if problem:
            self._refuse(caller, act, action, machine, job["id"] if job else None, problem)

    def _refuse(
        self, caller: Caller, act: Act, action: str, machine: str | None, job_id: str | None, problem: str
    ) -> None:
        if act in CHANGES:
            self.record(
                caller, action or act.value, "refused", machine, job_id, code="forbidden", problem=problem
            )
        raise HTTPException(403, problem)

    def _problem(self, caller: Caller, act: Act, machine: str | None, job: dict[str, Any] | None) -> str:
        if machine is not None and not caller.may_use(machine):
            return f"this key may not use {machine}"
        if act in OWNED and caller.role != "manager" and (job is None or not self.owns(caller, job)):
            return "only the job's owner, in a session at the machine, or a manager may do this"
        if act is Act.CONSOLE and machine is not None and caller.role != "manager":
            return self._console_problem(caller, machine)
        return ""

    def _console_problem(self, caller: Caller, machine: str) -> str:
        """The console is the session's: its member or the trainer supervising it (the kiosk acts for
        them); nobody outside a session, except a manager."""
        access = self.agent.access
        if access is None:
            return ""
        session = access.sessions.current(machine)
        if session is None:
            return f"nobody holds {machine}: badge in at the machine first"
        if caller.role == "session" and caller.member not in (session["member_id"], session["supervisor_id"]):
            return f"{machine} is held by another member's session"
        return ""

    def owns(self, caller: Caller, job: dict[str, Any]) -> bool:
        """A session token acts for its member on its machine; the kiosk for whoever holds the machine."""
        if caller.role == "manager":
            return True
        if caller.role == "kiosk":
            return self._in_session(job)
        return (
            caller.role == "session"
            and job["member_id"] == caller.member
            and caller.may_use(job["machine_id"])
        )

    def sees(self, caller: Caller, job: dict[str, Any]) -> bool:
        """Reads are scoped too: a key's machines; a member (session token, personal slicer key) sees
        only their own jobs."""
        if not caller.may_use(job["machine_id"]):
            return False
        if caller.role == "session" or (caller.role == "slicer" and caller.member):
            return bool(job["member_id"] == caller.member)
        return True

    def may_name(self, caller: Caller, member_id: str | None) -> bool:
        """Whether a member's id may be shown to this caller (managers, the kiosk, the member)."""
        return caller.role in ("manager", "kiosk", "booking") or (
            member_id is not None and member_id == caller.member
        )

    def record(
        self,
        caller: Caller,
        action: str,
        result: str,
        machine: str | None,
        job: dict[str, Any] | str | None = None,
        **detail: Any,
    ) -> None:
        """One audit row for a state-changing call, whether it went through or not."""
        job_id = job["id"] if isinstance(job, dict) else job
        self.agent.ledger.audit(caller.name, f"api:{action}", result, machine, job_id, **detail)

    def _in_session(self, job: dict[str, Any]) -> bool:
        access = self.agent.access
        if access is None:
            return True
        session = access.sessions.current(job["machine_id"])
        return bool(session and job["member_id"] in (None, session["member_id"]))
