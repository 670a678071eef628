"""The agent's own HTTP API (`/v1/…`): machines, jobs, quotes, control, sessions, usage, directory."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field

from ..errors import Conflict
from ..intake import JobRefused, SpoolFull, submit
from ..ledger.db import MAX_INTEGER
from . import uploads
from .auth import Authenticator, Caller
from .authz import Act, Gate

if TYPE_CHECKING:
    from ..agent import Agent


class Position(BaseModel):
    position: int = Field(ge=1, le=1_000_000, description="1 = next to run")


class LockBody(BaseModel):
    reason: str = Field("maintenance", max_length=200)


class BadgeBody(BaseModel):
    uid: str = Field(min_length=4, max_length=32, pattern="^[0-9A-Fa-f]+$", description="the card's UID, hex")


class MaterialBody(BaseModel):
    material: str = Field(min_length=1, max_length=40, description="a preset's name, e.g. PETG")


class Ack(BaseModel):
    record_id: str | list[str]


class DirectoryDoc(BaseModel):
    snapshot: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None


def job_view(job: dict[str, Any], spool_dir: Any = None, named: bool = True) -> dict[str, Any]:
    """A job as the API shows it: no path on disk (not even inside a fault's reason), and the member
    only to those who may see it."""
    estimate = json.loads(job["estimate_json"] or "{}")
    keys = ("id", "state", "name", "bytes", "sha256", "source", "member_id", "created_at", "started_at",
            "ended_at", "stop_type", "reason")  # fmt: skip
    out = {
        **{k: job[k] for k in keys},
        "machine": job["machine_id"],
        "position": job["queue_pos"],
        "quote": estimate.get("quote"),
        "material": estimate.get("material"),  # loaded, sliced for, a mismatch in words
        "estimate_s": estimate.get("time_s"),
        "material_g": estimate.get("material_g"),
        "material_mm": estimate.get("material_mm"),
        "thumbnail": f"/v1/jobs/{job['id']}/thumbnail" if estimate.get("thumbnail") else None,  # the slicer's
    }
    if out["reason"] and spool_dir is not None:
        out["reason"] = out["reason"].replace(f"{spool_dir}/", "").replace(str(spool_dir), "<spool>")
    if not named:
        out["member_id"] = None
    return out


def status_view(gate: Gate, caller: Caller, status: dict[str, Any]) -> dict[str, Any]:
    """A machine's status with the names of who is at it and whose job runs, to those who may see them."""
    out = dict(status)
    session, job = out.get("session"), out.get("job")
    if session and not gate.may_name(caller, session.get("member_id")):
        out["session"] = {**session, "member_id": None, "member_name": None, "supervisor_id": None}
    if job and not gate.may_name(caller, job.get("member_id")):
        out["job"] = {**job, "member_id": None}
    return out


def build(agent: Agent, auth: Authenticator) -> APIRouter:
    r = APIRouter(prefix="/v1")
    gate = Gate(agent, auth)
    spool = agent.config.spool_dir

    def machine_or_404(machine_id: str) -> None:
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")

    def wrong_state(caller: Caller, machine_id: str, command: str) -> None:
        """The dashboard's rule on the REST route too: a command the state does not offer is refused
        (409 with its reason code) and audited."""
        refused = agent.control.refused(machine_id, command)
        if refused is not None:
            gate.record(caller, command, "refused", machine_id, None, code=refused)
            raise Conflict(f"{machine_id}: {command} refused ({refused})", code=refused)

    def job_or_404(job_id: str) -> dict[str, Any]:
        return agent.control.job(job_id)  # NotFound (404)

    def view(caller: Caller, job: dict[str, Any]) -> dict[str, Any]:
        return job_view(job, spool, gate.may_name(caller, job["member_id"]))

    def readable_job(job_id: str, request: Request) -> tuple[Caller, dict[str, Any]]:
        """A job the caller may read; one it may not is as absent as one that does not exist."""
        caller = gate.allow(request, Act.READ)
        job = job_or_404(job_id)
        if not gate.sees(caller, job):
            raise HTTPException(404, f"no job {job_id!r}")
        return caller, job

    @r.get("/machines", tags=["machines"])
    def machines(request: Request) -> list[dict[str, Any]]:
        caller = gate.allow(request, Act.READ)
        return [
            status_view(gate, caller, agent.control.status(m)) for m in agent.machines if caller.may_use(m)
        ]

    @r.get("/machines/{machine_id}", tags=["machines"])
    def machine(machine_id: str, request: Request) -> dict[str, Any]:
        caller = gate.allow(request, Act.READ, machine=machine_id)
        machine_or_404(machine_id)
        return {
            **status_view(gate, caller, agent.control.status(machine_id)),
            "telemetry": agent.control.telemetry(machine_id),
        }

    @r.get("/jobs", tags=["jobs"])
    def jobs(request: Request, machine: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        caller = gate.allow(request, Act.READ)
        rows = agent.ledger.jobs(machine, (state,) if state else ())
        return [view(caller, j) for j in rows if gate.sees(caller, j)]

    @r.post("/jobs", status_code=201, tags=["jobs"])
    async def upload(
        request: Request,
        file: Annotated[UploadFile, File()],
        machine: Annotated[str, Form()],
        member: Annotated[str | None, Form()] = None,
        account: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        caller = gate.allow(request, Act.UPLOAD, machine=machine)
        machine_or_404(machine)
        owner = caller.member or (member if caller.role == "manager" else None)
        return await _submit(agent, file, machine, caller, owner, account, held=None)

    @r.get("/jobs/{job_id}", tags=["jobs"])
    def job(job_id: str, request: Request) -> dict[str, Any]:
        caller, found = readable_job(job_id, request)
        return view(caller, found)

    @r.get("/jobs/{job_id}/quote", tags=["jobs"])
    def quote(job_id: str, request: Request) -> dict[str, Any]:
        _caller, found = readable_job(job_id, request)
        return {"job_id": job_id, **json.loads(found["estimate_json"] or "{}")}

    @r.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
    def delete(job_id: str, request: Request) -> None:
        caller, found = gate.allow_job(request, Act.REMOVE, job_id, action="job-remove")
        if found["state"] not in ("queued", "held"):
            raise HTTPException(409, f"job is {found['state']}; cancel it on the machine instead")
        agent.control.remove_job(job_id, caller.name)

    @r.post("/jobs/{job_id}/move", tags=["jobs"])
    def move(job_id: str, body: Position, request: Request) -> dict[str, Any]:
        caller, found = gate.allow_job(request, Act.MANAGE, job_id, action="job-move")
        if found["state"] not in ("queued", "held"):
            raise HTTPException(409, f"job is {found['state']}")
        agent.ledger.move_job(job_id, body.position)
        gate.record(caller, "job-move", "moved", found["machine_id"], found, position=body.position)
        return view(caller, job_or_404(job_id))

    @r.post("/jobs/{job_id}/start", tags=["jobs"])
    def start(job_id: str, request: Request) -> dict[str, Any]:
        """Release a held job: its owner inside their session, or a manager."""
        caller, found = gate.allow_job(request, Act.RELEASE, job_id, action="job-release")
        if found["state"] != "held":
            raise HTTPException(409, f"job is {found['state']}, not held")
        agent.control.release_job(
            job_id, caller.name, manager=caller.role == "manager"
        )  # AfnError: the handler
        return view(caller, job_or_404(job_id))

    def control(machine_id: str, request: Request, action: str) -> dict[str, Any]:
        machine_or_404(machine_id)
        job = agent.control.running_job(machine_id)
        caller = gate.allow(request, Act.CONTROL, machine=machine_id, job=job, action=action)
        return run_command(agent, gate, caller, machine_id, action)

    def control_route(action: str) -> Callable[[str, Request], dict[str, Any]]:
        def route(machine_id: str, request: Request) -> dict[str, Any]:
            return control(machine_id, request, action)

        route.__doc__ = (
            f"{action.capitalize()} the machine's running job (its owner in a session, or a manager)."
        )
        return route

    for action in ("pause", "resume", "cancel", "estop"):
        r.add_api_route(
            f"/machines/{{machine_id}}/{action}",
            control_route(action),
            methods=["POST"],
            tags=["control"],
            name=action,
        )

    @r.post("/machines/{machine_id}/lock", tags=["control"])
    def lock(machine_id: str, body: LockBody, request: Request) -> dict[str, Any]:
        caller = gate.allow(request, Act.MANAGE, machine=machine_id, action="lock")
        machine_or_404(machine_id)
        wrong_state(caller, machine_id, "lock")
        return {"result": agent.control.lock(machine_id, caller.name, body.reason)}

    @r.post("/machines/{machine_id}/sim-badge", tags=["control"])
    def sim_badge(machine_id: str, body: BadgeBody, request: Request) -> dict[str, Any]:
        """A card held to a simulated reader (`reader = "sim"`: the demo, a lab trying the agent without
        hardware); 409 on a machine with a real reader. The audit keeps the act, never the UID."""
        caller = gate.allow(request, Act.MANAGE, machine=machine_id, action="sim-badge")
        machine_or_404(machine_id)
        try:
            reader = agent.access.sim_reader(machine_id) if agent.access else None
        except (KeyError, TypeError):
            reader = None
        if reader is None:
            agent.ledger.audit(caller.name, "sim-badge", "refused", machine_id, None, code="no-sim-reader")
            why = f"{machine_id} has no simulated badge reader (reader = \"sim\")"
            raise Conflict(why, code="no-sim-reader")
        reader.present(body.uid.upper())
        agent.ledger.audit(caller.name, "sim-badge", "presented", machine_id, None)
        return {"result": "presented"}

    @r.post("/machines/{machine_id}/unlock", tags=["control"])
    def unlock(machine_id: str, request: Request) -> dict[str, Any]:
        caller = gate.allow(request, Act.MANAGE, machine=machine_id, action="unlock")
        machine_or_404(machine_id)
        wrong_state(caller, machine_id, "unlock")
        return {"result": agent.control.unlock(machine_id, caller.name)}

    @r.post("/machines/{machine_id}/confirm", tags=["control"])
    def confirm(machine_id: str, request: Request) -> dict[str, Any]:
        """A person confirms the machine is ready (bed cleared, checked after a crash)."""
        caller = gate.allow(request, Act.CONFIRM, machine=machine_id, action="confirm")
        machine_or_404(machine_id)
        if not agent.control.confirm(machine_id, caller.name):
            raise HTTPException(409, "nothing to confirm")
        return {"result": "confirmed"}

    @r.post("/machines/{machine_id}/alarms/clear", tags=["control"])
    def clear_alarms(machine_id: str, request: Request) -> dict[str, Any]:
        """A person has read the machine's alarms and dealt with them (a manager, the member at the
        machine, the kiosk): they leave the status; the ledger keeps them with who cleared them."""
        caller = gate.allow(request, Act.CONFIRM, machine=machine_id, action="clear-alarms")
        machine_or_404(machine_id)
        return {"cleared": agent.control.clear_alarms(machine_id, caller.name)}

    @r.post("/machines/{machine_id}/material", tags=["control"])
    def material(machine_id: str, body: MaterialBody, request: Request) -> dict[str, Any]:
        """Say what filament is loaded (a preset): a manager, or the member holding the machine."""
        caller = gate.allow(request, Act.CONFIRM, machine=machine_id, action="material")
        machine_or_404(machine_id)
        access = agent.access
        if caller.role != "manager" and access is not None and access.sessions.current(machine_id) is None:
            why = "badge in at the machine first: its member or a manager sets its material"
            gate.record(caller, "material", "refused", machine_id, code="forbidden", problem=why)
            raise HTTPException(403, why)
        return agent.control.set_material(machine_id, body.material, caller.name)

    @r.get("/materials", tags=["machines"])
    def materials(request: Request) -> list[dict[str, Any]]:
        """The material presets a machine can be set to."""
        gate.allow(request, Act.READ)
        return [m.snapshot() for m in agent.config.materials.values()]

    @r.get("/machines/{machine_id}/alarms", tags=["machines"])
    def alarm_history(
        machine_id: str, request: Request, limit: int = Query(100, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        """The machine's alarms, newest first, cleared or not."""
        gate.allow(request, Act.OVERSEE, machine=machine_id)
        machine_or_404(machine_id)
        return agent.pump.alarm_book.history(machine_id, limit)

    @r.post("/reload", tags=["control"])
    def reload(request: Request) -> dict[str, Any]:
        """Read the configuration file again (as SIGHUP does): keys, tariffs, materials, access rules and
        machine settings at once; a machine's new port, profile or interlock when it is idle; what needs a
        restart is named. Running jobs are untouched. A file that does not load changes nothing (422)."""
        caller = gate.allow(request, Act.MANAGE, action="reload")
        report = agent.reload(f"api:{caller.name}")  # InvalidInput: the handler
        gate.record(caller, "reload", "applied", None, None)
        return report

    @r.get("/sessions", tags=["access"])
    def sessions(
        request: Request, machine: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        caller = gate.allow(request, Act.OVERSEE)
        if machine is None and caller.machines:
            raise HTTPException(403, "this key may see only its machines' sessions: name one (?machine=)")
        if machine is not None:
            gate.allow(request, Act.OVERSEE, machine=machine)
        sql, args = "SELECT * FROM sessions", []
        if machine:
            sql, args = sql + " WHERE machine_id=?", [machine]
        rows = agent.ledger.conn.execute(sql + " ORDER BY opened_at DESC LIMIT ?", (*args, limit))
        return [dict(x) for x in rows]

    @r.get("/usage", tags=["usage"])
    def usage(
        request: Request, after: int = Query(0, ge=0, le=MAX_INTEGER), limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        """Usage records after a cursor, oldest first; pass `next` back as `after`."""
        gate.allow(request, Act.USAGE)
        rows = agent.ledger.usage_after(after, limit)
        return {"records": [rec for _, rec in rows], "next": rows[-1][0] if rows else after}

    @r.post("/usage/ack", tags=["usage"])
    def ack(body: Ack, request: Request) -> dict[str, Any]:
        caller = gate.allow(request, Act.ACK, action="usage-ack")
        ids = body.record_id if isinstance(body.record_id, list) else [body.record_id]
        known = [i for i in ids if agent.ledger.acknowledge(i)]
        agent.ledger.audit(caller.name, "usage-ack", "ok", None, None, count=len(known))
        return {"acknowledged": known, "unknown": [i for i in ids if i not in known]}

    @r.post("/directory", tags=["access"])
    def directory(body: DirectoryDoc, request: Request) -> dict[str, Any]:
        """The booking system pushes a member directory snapshot or delta."""
        from ..access.directory import DirectoryError

        caller = gate.allow(request, Act.DIRECTORY, action="directory")
        if agent.access is None:
            raise HTTPException(409, "this agent has no [access] configured")
        try:
            if body.snapshot is not None:
                version = agent.access.directory.apply_snapshot(body.snapshot, f"api:{caller.name}")
                agent.ledger.audit(caller.name, "directory-snapshot", "applied", None, None, version=version)
                return {"version": version}
            if body.delta is not None:
                if not agent.access.directory.apply_delta(body.delta, f"api:{caller.name}"):
                    raise HTTPException(409, "delta does not apply to the cached version; send a snapshot")
                agent.ledger.audit(
                    caller.name, "directory-delta", "applied", None, None, version=body.delta["version"]
                )
                return {"version": body.delta["version"]}
        except DirectoryError as exc:
            raise HTTPException(422, str(exc)) from None
        raise HTTPException(422, "send {'snapshot': …} or {'delta': …}")

    @r.post("/directory/sync", tags=["access"])
    def directory_sync(request: Request) -> dict[str, Any]:
        """Pull the whole directory from the booking system now (Fab-manager), and say how it went."""
        caller = gate.allow(request, Act.MANAGE, action="directory-sync")
        if agent.access is None or agent.access.fab is None:
            raise HTTPException(409, "this agent pulls no directory: no [directory] table")
        status = agent.access.pull_fab_manager(full=True)
        gate.record(caller, "directory-sync", "ok" if status.ok else "failed", None, None)
        return status.view()

    @r.get("/audit", tags=["access"])
    def audit(
        request: Request, machine: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        caller = gate.allow(request, Act.OVERSEE, machine=machine)
        if machine is None and caller.machines:
            raise HTTPException(403, "this key may see only its machines' audit: name one (?machine=)")
        return agent.ledger.audit_log(machine, limit)

    return r


def run_command(agent: Agent, gate: Gate, caller: Caller, machine_id: str, action: str) -> dict[str, Any]:
    """Pause, resume, cancel or stop, for a caller the gate let through; audited either way."""
    actor = "manager" if caller.role == "manager" else "member"
    result, detail = agent.control.command(
        {"machine": machine_id, "actor": actor, "command": action, "args": {}}
    )
    gate.record(caller, action, result, machine_id, agent.control.running_job(machine_id), detail=detail)
    if result != "done":
        raise HTTPException(409, detail)
    return {"result": result, "detail": detail}


_ANALYSES: list[anyio.CapacityLimiter] = []


def _analyses() -> anyio.CapacityLimiter:
    """Uploads analysed at once (one per core of a Pi 4 would starve the machine threads: two)."""
    if not _ANALYSES:
        _ANALYSES.append(anyio.CapacityLimiter(2))
    return _ANALYSES[0]


async def _submit(
    agent: Agent,
    file: UploadFile,
    machine: str,
    caller: Caller,
    owner: str | None,
    account: str | None,
    held: bool | None,
    source: str = "upload",
) -> dict[str, Any]:
    if owner is None and agent.access is not None:
        held = True  # unclaimed: it waits at the machine for a member's explicit claim
    limit = int(agent.config.api_config().max_upload_mb * 1_000_000)
    tmp, name = await uploads.receive(file, agent.config.spool_dir, limit, agent.config.spool.min_free_mb)
    take_in = functools.partial(
        submit, agent.config, agent.ledger, machine, tmp, source, name, held,
        move=True, analyse=agent.analyses, key_quota_mb=caller.quota_mb,
        member_id=owner, account=account, submitted_by=caller.name,
    )  # fmt: skip
    try:  # the analysis reads the whole file: never on the event loop (agent.analyses: another process)
        job_id, quote = await anyio.to_thread.run_sync(take_in, limiter=_analyses())
    except JobRefused as exc:
        agent.ledger.audit(caller.name, "upload", "refused", machine, None, code=exc.code, detail=str(exc))
        raise type(exc)(f"{name}: {exc}" if isinstance(exc, SpoolFull) else str(exc)) from None
    finally:
        tmp.unlink(missing_ok=True)
    agent.ledger.audit(caller.name, "upload", "queued", machine, job_id, name=name, member=owner)
    agent.publisher.status_changed(machine)  # its queue is longer
    job = agent.control.job(job_id)
    return {**job_view(job, agent.config.spool_dir), "quote": quote.get("quote"), "analysis": quote}
