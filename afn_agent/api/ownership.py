"""Who owns a job: members' own slicer keys (minted at the machine, shown once as text and QR), the
claim of an unclaimed upload by the member holding the machine, and a manager's reassignment.

An upload sent with a shared key once started under whoever badged in next and was billed to them;
now it waits, unclaimed, until a member explicitly chooses it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import segno
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from .auth import Authenticator
from .authz import Act, Gate
from .native import job_view

if TYPE_CHECKING:
    from ..agent import Agent


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=80, description="where it is used, e.g. 'ana laptop'")
    member_id: str | None = Field(None, max_length=64, description="managers: the member it is for")


class Owner(BaseModel):
    member_id: str | None = Field(max_length=64, description="the member whose job it is (null: nobody)")


def qr_svg(text: str) -> str:
    """The key as a QR code (SVG): a phone beside the slicer's computer reads it instead of typing."""
    return str(segno.make(text, error="m").svg_inline(scale=4, border=2))


def build(agent: Agent, auth: Authenticator) -> APIRouter:
    r = APIRouter(prefix="/v1")
    gate = Gate(agent, auth)

    @r.post("/keys", status_code=201, tags=["access"])
    def make_key(body: NewKey, request: Request) -> dict[str, Any]:
        """A slicer key of one member: every upload sent with it is theirs, billed to them. The key is in
        this answer only (text and QR); the agent keeps its hash."""
        caller = gate.allow(request, Act.KEYS, action="key-create")
        member = caller.member if caller.role == "session" else body.member_id
        if member is None:
            raise HTTPException(422, "name the member the key is for (member_id)")
        if agent.access is not None and agent.access.directory.member(member) is None:
            raise HTTPException(422, f"no member {member!r} in the directory")
        key, row = agent.keys.add(body.name, "slicer", caller.name, member_id=member)
        gate.record(caller, "key-create", "created", None, None, key_id=row["id"], member=member)
        return {**row, "key": key, "qr_svg": qr_svg(key)}

    @r.get("/keys", tags=["access"])
    def keys(request: Request) -> list[dict[str, Any]]:
        """Live keys made here: a member's own, or all of them for a manager (never a key or its hash)."""
        caller = gate.allow(request, Act.KEYS)
        return agent.keys.list(caller.member if caller.role == "session" else None)

    @r.delete("/keys/{key_id}", status_code=204, tags=["access"])
    def revoke(key_id: str, request: Request) -> None:
        caller = gate.allow(request, Act.KEYS, action="key-revoke")
        row = agent.keys.get(key_id)
        if row is None or (caller.role == "session" and row["member_id"] != caller.member):
            raise HTTPException(404, f"no key {key_id!r}")
        agent.keys.revoke(key_id, caller.name)
        gate.record(caller, "key-revoke", "revoked", None, None, key_id=key_id, member=row["member_id"])

    @r.post("/jobs/{job_id}/claim", tags=["jobs"])
    def claim(job_id: str, request: Request) -> dict[str, Any]:
        """The member holding the machine chooses an unclaimed upload: theirs from now on, and started."""
        job = agent.control.job(job_id)
        caller = gate.allow(request, Act.CLAIM, machine=job["machine_id"], action="job-claim")
        assert caller.member is not None  # a session caller always acts for its member
        claimed = agent.control.claim_job(job_id, caller.member, caller.name)  # Conflict: audited
        return job_view(claimed, agent.config.spool_dir)

    @r.post("/jobs/{job_id}/owner", tags=["jobs"])
    def reassign(job_id: str, body: Owner, request: Request) -> dict[str, Any]:
        """A manager says whose job it is (audited, with the owner before)."""
        caller, _job = gate.allow_job(request, Act.MANAGE, job_id, action="job-reassign")
        access, member = agent.access, body.member_id
        if member and access is not None and access.directory.member(member) is None:
            raise HTTPException(422, f"no member {member!r} in the directory")
        return job_view(agent.control.reassign_job(job_id, member, caller.name), agent.config.spool_dir)

    return r
