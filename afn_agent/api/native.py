"""The agent's own HTTP API (`/v1/…`): machines, jobs, quotes, control, sessions, usage, directory."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field

from ..spool import JobRefused, submit
from . import uploads
from .auth import Authenticator, Caller

MANAGE = ("manager",)
CONTROL = ("manager", "session", "kiosk")
READ = ("manager", "session", "kiosk", "booking", "slicer")


class Position(BaseModel):
    position: int = Field(ge=1, le=1_000_000, description="1 = next to run")


class LockBody(BaseModel):
    reason: str = Field("maintenance", max_length=200)


class Ack(BaseModel):
    record_id: str | list[str]


class DirectoryDoc(BaseModel):
    snapshot: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (no file path on disk)."""
    estimate = json.loads(job["estimate_json"] or "{}")
    keys = (
        "id",
        "state",
        "name",
        "bytes",
        "sha256",
        "source",
        "member_id",
        "created_at",
        "started_at",
        "ended_at",
        "stop_type",
        "reason",
    )
    return {
        **{k: job[k] for k in keys},
        "machine": job["machine_id"],
        "position": job["queue_pos"],
        "quote": estimate.get("quote"),
        "estimate_s": estimate.get("time_s"),
        "material_g": estimate.get("material_g"),
        "material_mm": estimate.get("material_mm"),
    }


def build(agent, auth: Authenticator) -> APIRouter:
    r = APIRouter(prefix="/v1")

    def machine_or_404(machine_id: str) -> None:
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = agent.ledger.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    def owns(caller: Caller, job: dict[str, Any]) -> bool:
        if caller.role in ("manager", "kiosk"):
            return caller.role == "manager" or _in_session(agent, job)
        return (
            caller.role == "session"
            and job["member_id"] == caller.member
            and caller.may_use(job["machine_id"])
        )

    @r.get("/machines", tags=["machines"])
    def machines(request: Request) -> list[dict[str, Any]]:
        auth.require(request, *READ)
        return [agent.status(m) for m in agent.machines]

    @r.get("/machines/{machine_id}", tags=["machines"])
    def machine(machine_id: str, request: Request) -> dict[str, Any]:
        auth.require(request, *READ)
        machine_or_404(machine_id)
        return {**agent.status(machine_id), "telemetry": agent.telemetry(machine_id)}

    @r.get("/jobs", tags=["jobs"])
    def jobs(request: Request, machine: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        caller = auth.require(request, *READ)
        rows = agent.ledger.jobs(machine, (state,) if state else ())
        if caller.role == "session":
            rows = [j for j in rows if j["member_id"] == caller.member]
        return [job_view(j) for j in rows]

    @r.post("/jobs", status_code=201, tags=["jobs"])
    async def upload(
        request: Request,
        file: Annotated[UploadFile, File()],
        machine: Annotated[str, Form()],
        member: Annotated[str | None, Form()] = None,
        account: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        caller = auth.require(request, "slicer", "manager", "session", "kiosk", machine=machine)
        machine_or_404(machine)
        owner = caller.member or (member if caller.role == "manager" else None)
        return await _submit(agent, file, machine, caller, owner, account, held=None)

    @r.get("/jobs/{job_id}", tags=["jobs"])
    def job(job_id: str, request: Request) -> dict[str, Any]:
        auth.require(request, *READ)
        return job_view(job_or_404(job_id))

    @r.get("/jobs/{job_id}/quote", tags=["jobs"])
    def quote(job_id: str, request: Request) -> dict[str, Any]:
        auth.require(request, *READ)
        job = job_or_404(job_id)
        return {"job_id": job_id, **json.loads(job["estimate_json"] or "{}")}

    @r.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
    def delete(job_id: str, request: Request) -> None:
        caller = auth.require(request, *CONTROL)
        job = job_or_404(job_id)
        if not owns(caller, job):
            raise HTTPException(403, "only its owner (in a session) or a manager may remove a job")
        if job["state"] not in ("queued", "held"):
            raise HTTPException(409, f"job is {job['state']}; cancel it on the machine instead")
        agent.remove_job(job_id, caller.name)

    @r.post("/jobs/{job_id}/move", tags=["jobs"])
    def move(job_id: str, body: Position, request: Request) -> dict[str, Any]:
        caller = auth.require(request, *MANAGE)
        job = job_or_404(job_id)
        if job["state"] not in ("queued", "held"):
            raise HTTPException(409, f"job is {job['state']}")
        agent.ledger.move_job(job_id, body.position)
        agent.ledger.audit(
            caller.name, "job-move", "moved", job["machine_id"], job_id, position=body.position
        )
        return job_view(job_or_404(job_id))

    @r.post("/jobs/{job_id}/start", tags=["jobs"])
    def start(job_id: str, request: Request) -> dict[str, Any]:
        """Release a held job: its owner inside their session, or a manager."""
        caller = auth.require(request, *CONTROL)
        job = job_or_404(job_id)
        if not owns(caller, job):
            raise HTTPException(403, "only its owner in a session at the machine, or a manager, may start it")
        if job["state"] != "held":
            raise HTTPException(409, f"job is {job['state']}, not held")
        try:
            agent.release_job(job_id, caller.name, manager=caller.role == "manager")
        except ValueError as exc:
            raise HTTPException(409, f"job_overruns_booking: {exc}") from None
        return job_view(job_or_404(job_id))

    def control(machine_id: str, request: Request, action: str) -> dict[str, Any]:
        caller = auth.require(request, *CONTROL, machine=machine_id)
        machine_or_404(machine_id)
        if caller.role != "manager":
            running = agent.running_job(machine_id)
            if running is None or not owns(caller, running):
                raise HTTPException(403, "only the member whose job runs, or a manager, may do this")
        actor = "manager" if caller.role == "manager" else "member"
        result, detail = agent.command({"machine": machine_id, "actor": actor, "command": action, "args": {}})
        agent.ledger.audit(caller.name, f"api:{action}", result, machine_id, None, detail=detail)
        if result != "done":
            raise HTTPException(409, detail)
        return {"result": result, "detail": detail}

    def control_route(action: str):
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
        caller = auth.require(request, *MANAGE, machine=machine_id)
        machine_or_404(machine_id)
        return {"result": agent.lock(machine_id, caller.name, body.reason)}

    @r.post("/machines/{machine_id}/unlock", tags=["control"])
    def unlock(machine_id: str, request: Request) -> dict[str, Any]:
        caller = auth.require(request, *MANAGE, machine=machine_id)
        machine_or_404(machine_id)
        return {"result": agent.unlock(machine_id, caller.name)}

    @r.post("/machines/{machine_id}/confirm", tags=["control"])
    def confirm(machine_id: str, request: Request) -> dict[str, Any]:
        """A person confirms the machine is ready (bed cleared, checked after a crash)."""
        caller = auth.require(request, *CONTROL, machine=machine_id)
        machine_or_404(machine_id)
        if not agent.confirm(machine_id, caller.name):
            raise HTTPException(409, "nothing to confirm")
        return {"result": "confirmed"}

    @r.get("/sessions", tags=["access"])
    def sessions(request: Request, machine: str | None = None, limit: int = Query(100, ge=1, le=1000)):
        auth.require(request, *MANAGE)
        sql, args = "SELECT * FROM sessions", []
        if machine:
            sql, args = sql + " WHERE machine_id=?", [machine]
        rows = agent.ledger.conn.execute(sql + " ORDER BY opened_at DESC LIMIT ?", (*args, limit))
        return [dict(x) for x in rows]

    @r.get("/usage", tags=["usage"])
    def usage(
        request: Request, after: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(100, ge=1, le=1000)
    ):
        """Usage records after a cursor, oldest first; pass `next` back as `after`."""
        auth.require(request, "booking", "manager")
        rows = agent.ledger.usage_after(after, limit)
        return {"records": [rec for _, rec in rows], "next": rows[-1][0] if rows else after}

    @r.post("/usage/ack", tags=["usage"])
    def ack(body: Ack, request: Request) -> dict[str, Any]:
        caller = auth.require(request, "booking")
        ids = body.record_id if isinstance(body.record_id, list) else [body.record_id]
        known = [i for i in ids if agent.ledger.acknowledge(i)]
        agent.ledger.audit(caller.name, "usage-ack", "ok", None, None, count=len(known))
        return {"acknowledged": known, "unknown": [i for i in ids if i not in known]}

    @r.post("/directory", tags=["access"])
    def directory(body: DirectoryDoc, request: Request) -> dict[str, Any]:
        """The booking system pushes a member directory snapshot or delta."""
        from ..access.directory import DirectoryError

        caller = auth.require(request, "booking", "manager")
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

    @r.get("/audit", tags=["access"])
    def audit(request: Request, machine: str | None = None, limit: int = Query(100, ge=1, le=1000)):
        auth.require(request, *MANAGE)
        return agent.ledger.audit_log(machine, limit)

    return r


def _in_session(agent, job: dict[str, Any]) -> bool:
    """The kiosk acts for whoever holds the machine now: the job must be that member's."""
    if agent.access is None:
        return True
    session = agent.access.sessions.current(job["machine_id"])
    return bool(session and (job["member_id"] in (None, session["member_id"])))


async def _submit(
    agent,
    file: UploadFile,
    machine: str,
    caller: Caller,
    owner: str | None,
    account: str | None,
    held: bool | None,
    source: str = "upload",
) -> dict[str, Any]:
    limit = int(agent.config.api.max_upload_mb * 1_000_000)
    tmp, name = await uploads.receive(file, agent.config.spool_dir, limit)
    try:
        job_id, quote = submit(
            agent.config,
            agent.ledger,
            machine,
            tmp,
            source,
            name,
            held,
            move=True,
            member_id=owner,
            account=account,
        )
    except JobRefused as exc:
        raise HTTPException(422, str(exc)) from None
    finally:
        tmp.unlink(missing_ok=True)
    agent.ledger.audit(caller.name, "upload", "queued", machine, job_id, name=name, member=owner)
    job = agent.ledger.job(job_id)
    return {**job_view(job), "quote": quote.get("quote"), "analysis": quote}
