"""The machine console's routes: `POST /v1/machines/<id>/console/<action>` for every set-up action (jog,
zero, probe, frame, home, unlock, preheat, filament …) and a waiting job's Continue.

One route for all of them, through the one Gate (Act.CONSOLE: the session's member or trainer, the
kiosk while a session is open, a manager) and one audit row per call, taken or refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import AfnError
from ..machine.console import Do
from .auth import Authenticator
from .authz import Act, Gate

if TYPE_CHECKING:
    from ..agent import Agent


class ConsoleBody(BaseModel):
    """What an action needs beyond its name; every field optional, unknown ones refused."""

    model_config = ConfigDict(extra="forbid")
    axes: dict[str, float] | None = Field(None, description='jog step or direction, zero values: {"X": -1}')
    continuous: bool = Field(False, description="jog: until released (renew every 0.2 s; 0.5 s lease)")
    job_id: str | None = Field(None, max_length=64, description="frame: the job (default: the next one)")
    material: str | None = Field(None, max_length=40, description="preheat: a material preset")
    hotend: float | None = Field(None, description="preheat: °C")
    bed: float | None = Field(None, description="preheat: °C")
    z: float | None = Field(None, description="babystep: mm (±0.2)")


def build(agent: Agent, auth: Authenticator) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["console"])
    gate = Gate(agent, auth)

    @r.post("/machines/{machine_id}/console/{action}")
    async def console(
        machine_id: str, action: str, request: Request, body: ConsoleBody | None = None
    ) -> dict[str, Any]:
        """A console action at the machine; 409 with the reason when the machine cannot take it now."""
        name = f"console:{action}"[:40]
        caller = gate.allow(request, Act.CONSOLE, machine=machine_id, action=name)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        try:
            do = Do(action)
        except ValueError:
            known = ", ".join(d.value for d in Do)
            raise HTTPException(404, f"no console action {action!r} (actions: {known})") from None
        args = body.model_dump(exclude_none=True, exclude_defaults=True) if body is not None else {}
        try:
            said = await anyio.to_thread.run_sync(agent.console.act, machine_id, do, args, caller.name)
        except AfnError as exc:
            gate.record(caller, name, "refused", machine_id, code=exc.code, problem=str(exc), args=args)
            raise
        gate.record(caller, name, "done", machine_id, said=said, args=args)
        return {"result": "done", "detail": said}

    return r
