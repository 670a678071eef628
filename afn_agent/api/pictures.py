"""Camera pictures over the API: a job's pictures (its owner or a manager), one picture's JPEG, and a
picture now at a machine (a manager, audited). The files stay beside the ledger (afn_agent/camera.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam

from ..errors import Conflict
from ..ledger.db import MAX_INTEGER
from ..ledger.snapshots import Snapshots
from .auth import Authenticator
from .authz import Act, Gate

if TYPE_CHECKING:
    from ..agent import Agent


def build(agent: Agent, auth: Authenticator) -> APIRouter:
    r = APIRouter()
    gate = Gate(agent, auth)
    snapshots = Snapshots(agent.ledger)

    def shown(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "machine": row["machine_id"], "job_id": row["job_id"],
                "moment": row["moment"], "taken_at": row["taken_at"], "sha256": row["sha256"],
                "bytes": row["bytes"],
                "kept": row["removed_at"] is None, "url": f"/v1/snapshots/{row['id']}"}  # fmt: skip

    @r.get("/v1/jobs/{job_id}/snapshots", tags=["jobs"])
    def of_job(job_id: str, request: Request) -> list[dict[str, Any]]:
        """The job's camera pictures (start, end, fault, on demand), with their hashes."""
        caller = gate.allow(request, Act.READ)
        job = agent.control.job(job_id)
        if not gate.sees(caller, job):
            raise HTTPException(404, f"no job {job_id!r}")
        return [shown(row) for row in snapshots.of_job(job_id)]

    @r.get("/v1/snapshots/{snapshot_id}", tags=["jobs"])
    def picture(request: Request, snapshot_id: int = PathParam(ge=1, le=MAX_INTEGER)) -> Response:
        """One picture's JPEG (a timelapse's MP4), for whoever may see its job (without a job: managers)."""
        caller = gate.allow(request, Act.READ)
        row = snapshots.one(snapshot_id)
        job = agent.ledger.job(row["job_id"]) if row and row["job_id"] else None
        visible = row is not None and (gate.sees(caller, job) if job else caller.role == "manager")
        if row is None or not visible:
            raise HTTPException(404, f"no picture {snapshot_id}")
        path = Path(row["path"])
        if row["removed_at"] is not None or not path.is_file():
            raise HTTPException(410, f"picture {snapshot_id} was removed by the retention limits")
        cache = {"Cache-Control": "max-age=86400"}
        media = "video/mp4" if path.suffix == ".mp4" else "image/jpeg"  # a timelapse, or a picture
        return Response(path.read_bytes(), media_type=media, headers=cache)

    @r.post("/v1/machines/{machine_id}/snapshot", status_code=202, tags=["control"])
    def take(machine_id: str, request: Request) -> dict[str, Any]:
        """A picture now (it lands as a `snapshot` event and among the job's pictures)."""
        caller = gate.allow(request, Act.MANAGE, machine=machine_id, action="snapshot")
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        cameras = agent.cameras
        if cameras is None or machine_id not in cameras.cameras:
            gate.record(caller, "snapshot", "refused", machine_id, code="no_camera")
            raise Conflict(f"{machine_id} has no camera ([machines.camera])", code="no_camera")
        queued = cameras.demand(machine_id, caller.name)
        gate.record(caller, "snapshot", "queued" if queued else "refused", machine_id)
        if not queued:
            raise Conflict(f"{machine_id}'s camera is behind; try again", code="camera_busy")
        return {"queued": True, "machine": machine_id}

    return r
