"""The kiosk: a page for the small screen beside the machine, and the live view it draws from."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from .. import i18n
from ..ledger.keys import PAIRING_S, Pairing
from .auth import Authenticator
from .authz import Act, Gate
from .kiosk_view import kiosk_view, language

if TYPE_CHECKING:
    from ..agent import Agent

STATIC = Path(__file__).with_name("kiosk")
STATIC_FILES = ("kiosk.js", "kiosk.css")
PAIR_FAILURES = 10  # wrong pairing codes within PAIR_WINDOW_S before pairing pauses (six digits: no guessing)
PAIR_WINDOW_S = 600.0


class PairBody(BaseModel):
    code: str = Field(pattern=r"^\d{6}$", description="the six digits shown by the dashboard or the CLI")
    name: str = Field("tablet", min_length=1, max_length=40, description="what this screen is")


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
        if name not in STATIC_FILES:
            raise HTTPException(404)
        return FileResponse(STATIC / name)

    @r.get("/v1/kiosk/{machine_id}")
    def view(machine_id: str, request: Request, lang: str | None = None) -> dict[str, Any]:
        caller = gate.allow(request, Act.SCREEN, machine=machine_id)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        return kiosk_view(agent, auth, machine_id, caller.role == "kiosk", language(agent, machine_id, lang))

    @r.get("/v1/kiosk-words", include_in_schema=False)
    def kiosk_words(lang: str = "fr") -> dict[str, Any]:
        """The screen's labels alone, for a screen that must pair before it may see a machine."""
        chosen = lang if lang in i18n.LANGUAGES else "fr"
        return {"lang": chosen, "text": i18n.texts(chosen, "ui.")}

    @r.get("/v1/jobs/{job_id}/thumbnail", tags=["jobs"])
    def thumbnail(job_id: str, request: Request) -> Response:
        """The picture the slicer embedded in the job (PNG or JPEG), for the console and the dashboard."""
        caller = gate.allow(request, Act.READ)
        job = agent.control.job(job_id)
        if not gate.sees(caller, job):
            raise HTTPException(404, f"no job {job_id!r}")
        picture = agent.ledger.thumbnail(job_id)
        if picture is None:
            raise HTTPException(404, f"job {job_id!r} has no embedded picture")
        return Response(picture[1], media_type=picture[0], headers={"Cache-Control": "max-age=86400"})

    failures: deque[float] = deque()

    @r.post("/v1/machines/{machine_id}/pairing-code", tags=["access"])
    def pairing_code(machine_id: str, request: Request) -> dict[str, Any]:
        """A one-time code (ten minutes) that pairs a screen to this machine's console only."""
        caller = gate.allow(request, Act.MANAGE, machine=machine_id, action="pairing-code")
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        code = Pairing(agent.keys).code(machine_id, caller.name)
        gate.record(caller, "pairing-code", "made", machine_id)
        return {"code": code, "machine": machine_id, "valid_s": PAIRING_S}

    @r.post("/v1/pair", tags=["access"])
    def pair(body: PairBody, request: Request) -> dict[str, Any]:
        """A screen gives the code it was shown and gets its own key: that machine's console, nothing else."""
        now = time.monotonic()
        while failures and now - failures[0] > PAIR_WINDOW_S:
            failures.popleft()
        who = request.client.host if request.client else "?"
        if len(failures) >= PAIR_FAILURES:
            agent.ledger.audit(f"screen:{who}", "pair", "refused", None, None, problem="too many wrong codes")
            raise HTTPException(429, "too many wrong pairing codes: ask a manager for a new one later")
        paired = Pairing(agent.keys).pair(body.code, f"{body.name} ({who})")
        if paired is None:
            failures.append(now)
            agent.ledger.audit(f"screen:{who}", "pair", "refused", None, None, problem="unknown or used code")
            raise HTTPException(403, "this code is unknown, used or expired: ask for a new one")
        key, row = paired
        machine_id = row["machines"][0]
        agent.ledger.audit(f"screen:{who}", "pair", "paired", machine_id, None, key_id=row["id"])
        return {"token": key, "machine": machine_id, "key_id": row["id"], "console": f"/kiosk/{machine_id}"}

    @r.get("/v1/kiosk/{machine_id}/stream")
    async def stream(machine_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: the kiosk view each time it changes (and a heartbeat every 15 s)."""
        caller = gate.allow(request, Act.SCREEN, machine=machine_id)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")

        chosen = language(agent, machine_id, request.query_params.get("lang"))
        token = caller.role == "kiosk"

        async def events() -> AsyncIterator[str]:
            last, beat = None, time.monotonic()
            while not await request.is_disconnected():
                view = await asyncio.to_thread(kiosk_view, agent, auth, machine_id, token, chosen)
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
