"""The machine console's routes: `POST /v1/machines/<id>/console/<action>` for every set-up action (jog,
zero, probe, frame, home, unlock, preheat, filament …) and a waiting job's Continue.

One route for all of them, through the one Gate (Act.CONSOLE: the session's member or trainer, the
kiosk while a session is open, a manager) and one audit row per call, taken or refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import AfnError, InvalidInput
from ..machine.console import Do
from ..payload import Malformed, decode_json
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


async def _body(request: Request) -> dict[str, Any]:
    """The JSON body checked against ConsoleBody (bounded: the app's body limit and JSON decoder)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = decode_json(raw, max_bytes=8192)
        body = ConsoleBody.model_validate(data)
    except Malformed as exc:
        raise InvalidInput(f"body: {exc.reason}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"body.{where}: {first['msg']}") from None
    return body.model_dump(exclude_none=True, exclude_defaults=True)


def build(agent: Agent, auth: Authenticator) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["console"])
    gate = Gate(agent, auth)

    schema = {"requestBody": {"content": {"application/json": {"schema": ConsoleBody.model_json_schema()}}}}

    @r.post("/machines/{machine_id}/console/{action}", openapi_extra=schema)
    async def console(machine_id: str, action: str, request: Request) -> dict[str, Any]:
        """A console action at the machine; 409 with the reason when the machine cannot take it now. The
        body is read only once the caller may act here (a stranger learns nothing from a 422)."""
        name = f"console:{action}"[:40]
        caller = gate.allow(request, Act.CONSOLE, machine=machine_id, action=name)
        if machine_id not in agent.machines:
            raise HTTPException(404, f"no machine {machine_id!r}")
        try:
            do = Do(action)
        except ValueError:
            known = ", ".join(d.value for d in Do)
            raise HTTPException(404, f"no console action {action!r} (actions: {known})") from None
        args: dict[str, Any] = {}
        try:
            args = await _body(request)
            said = await anyio.to_thread.run_sync(agent.console.act, machine_id, do, args, caller.name)
        except AfnError as exc:
            gate.record(caller, name, "refused", machine_id, code=exc.code, problem=str(exc), args=args)
            raise
        gate.record(caller, name, "done", machine_id, said=said, args=args)
        return {"result": "done", "detail": said}

    return r
