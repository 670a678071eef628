"""The kiosk: a page for the small screen beside the machine, and the live view it draws from."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from ..ledger.usage import parse_iso, utc_now
from .auth import Authenticator
from .authz import Act, Gate
from .native import job_view

if TYPE_CHECKING:
    from ..agent import Agent

STATIC = Path(__file__).with_name("kiosk")
DECISION_SHOWN_S = 60
REASONS = {
    "allowed": "Welcome, {name}.",
    "unknown_badge": "This badge is not known here. Ask a fab manager to register it.",
    "not_trained": "{name}, you are not trained on this machine yet. Book a training session.",
    "training_expired": "{name}, your training for this machine has expired. Renew it with a trainer.",
    "supervisor_required": "{name}, your first uses are supervised: a trainer must badge in now.",
    "booked_by_other": "This machine is booked by someone else right now.",
    "booking_required": "This machine needs a booking. Book it, then badge in again.",
    "outside_opening_hours": "The lab is closed now.",
    "machine_locked": "This machine is locked for maintenance.",
    "job_overruns_booking": "Your job would run into the next booking: {detail}.",
    "cache_too_old": "The member list here is out of date; a fab manager must reconnect the machine.",
}


def words(decision: dict[str, Any]) -> str:
    template = str(REASONS.get(decision.get("code", ""), decision.get("detail") or decision.get("code", "")))
    return template.format(name=decision.get("member_name") or "member", detail=decision.get("detail", ""))


def build(agent: Agent, auth: Authenticator, default_machine: str) -> APIRouter:
    r = APIRouter(tags=["kiosk"])

    gate = Gate(agent, auth)

    @r.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"/kiosk/{default_machine}")

    @r.get("/kiosk/{machine_id}", include_in_schema=False)
    def page(machine_id: str) -> FileResponse:
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        return FileResponse(STATIC / "index.html")

    @r.get("/kiosk-static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in ("kiosk.js", "kiosk.css"):
            raise HTTPException(404)
        return FileResponse(STATIC / name)

    @r.get("/v1/kiosk/{machine_id}")
    def view(machine_id: str, request: Request) -> dict[str, Any]:
        caller = gate.allow(request, Act.SCREEN, machine=machine_id)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        return kiosk_view(agent, auth, machine_id, with_token=caller.role == "kiosk")

    @r.get("/v1/kiosk/{machine_id}/stream")
    async def stream(machine_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: the kiosk view each time it changes (and a heartbeat every 15 s)."""
        caller = gate.allow(request, Act.SCREEN, machine=machine_id)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")

        async def events() -> AsyncIterator[str]:
            last, beat = None, time.monotonic()
            while not await request.is_disconnected():
                view = await asyncio.to_thread(kiosk_view, agent, auth, machine_id, caller.role == "kiosk")
                text = json.dumps(view, sort_keys=True, default=str)
                if text != last:
                    last, beat = text, time.monotonic()
                    yield f"data: {text}\n\n"
                elif time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": still here\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    return r


def kiosk_view(agent: Agent, auth: Authenticator, machine_id: str, with_token: bool) -> dict[str, Any]:
    status = agent.control.status(machine_id)
    session = status.get("session")
    member = session["member_id"] if session else None
    jobs = agent.ledger.jobs(machine_id, ("held", "queued")) if member else []
    waiting = [j for j in jobs if j["member_id"] == member]
    unclaimed = [j for j in jobs if j["member_id"] is None and j["state"] == "held" and j["source"] != "cli"]
    running = agent.control.running_job(machine_id)
    figures = agent.control.job_figures(machine_id)
    view: dict[str, Any] = {
        "machine": machine_id,
        "state": status["state"],
        "locked": status["locked"],
        "needs_confirmation": status["needs_confirmation"],
        "alarms": status["alarms"],
        "material": status["material"],
        "materials": sorted(agent.config.materials),
        "session": session,
        "decision": _last_decision(agent, machine_id),
        "queue": [job_view(j, agent.config.spool_dir) for j in waiting],
        "unclaimed": [job_view(j, agent.config.spool_dir) for j in unclaimed],
        "running": None,
    }
    if running is not None:
        view["running"] = {
            **job_view(running, agent.config.spool_dir),
            "progress": status["job"]["progress"] if status["job"] else 0.0,
            "eta_s": status["job"]["eta_s"] if status["job"] else None,
            "elapsed_s": figures["total_s"] if figures else 0.0,
            "material_g": round(figures["material_g"], 2) if figures else 0.0,
            "price_so_far": figures["price_so_far"] if figures else None,
            "currency": figures["currency"] if figures else None,
        }
    access = agent.access
    if with_token and session is not None and access and (raw := access.sessions.current(machine_id)):
        view["token"] = auth.token_for_session(machine_id, raw)
    return view


def _last_decision(agent: Agent, machine_id: str) -> dict[str, Any] | None:
    for row in agent.ledger.audit_log(machine_id, 20):
        if row["action"] != "badge":
            continue
        if (utc_now() - parse_iso(row["at"])).total_seconds() > DECISION_SHOWN_S:
            return None
        detail = json.loads(row["detail_json"])
        return {
            "code": row["result"],
            "action": detail.get("action"),
            "member_name": detail.get("member_name"),
            "text": words(detail),
            "at": row["at"],
        }
    return None
