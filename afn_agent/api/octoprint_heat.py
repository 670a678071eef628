"""OctoPrint's temperature routes (`/api/printer/tool`, `/api/printer/bed`) on a machine's face: reading them
is a read; setting a target is the console's preheat, so the same people may do it (the session's
member, the kiosk, a manager), the same limits hold, and it is audited the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, HTTPException, Request, Response

from ..errors import AfnError
from ..machine.console import Do
from .auth import Authenticator
from .authz import Act, Gate
from .body_limit import json_object

if TYPE_CHECKING:
    from ..agent import Agent
    from ..machine.worker import Machine


def octoprint_name(heater: str) -> str:
    """Marlin's heater names as OctoPrint spells them: T -> tool0, T1 -> tool1, B -> bed."""
    if heater == "B":
        return "bed"
    if heater == "T":
        return "tool0"
    return f"tool{heater[1:]}" if heater.startswith("T") and heater[1:].isdigit() else heater.lower()


def temperatures(m: Machine) -> dict[str, dict[str, float]]:
    """What OctoPrint's /api/printer says of each heater (no offsets here)."""
    return {octoprint_name(h): {"actual": a, "target": t, "offset": 0}
            for h, (a, t) in m.temperatures.items()}  # fmt: skip


def build(agent: Agent, auth: Authenticator, machine_id: str, prefix: str) -> APIRouter:
    r = APIRouter(prefix=prefix, tags=["octoprint"])
    gate = Gate(agent, auth)

    @r.get("/api/printer/tool")
    def tools(request: Request) -> dict[str, Any]:
        gate.allow(request, Act.READ, machine=machine_id)
        return {k: v for k, v in temperatures(agent.machines[machine_id]).items() if k.startswith("tool")}

    @r.get("/api/printer/bed")
    def bed(request: Request) -> dict[str, Any]:
        gate.allow(request, Act.READ, machine=machine_id)
        return {k: v for k, v in temperatures(agent.machines[machine_id]).items() if k == "bed"}

    @r.post("/api/printer/tool", status_code=204)
    async def tool_command(request: Request) -> Response:
        return await _target(request, "tool")

    @r.post("/api/printer/bed", status_code=204)
    async def bed_command(request: Request) -> Response:
        return await _target(request, "bed")

    async def _target(request: Request, which: str) -> Response:
        """A new target for the nozzle or the bed: a preheat of that heater alone."""
        action = f"printer-{which}"
        caller = gate.allow(request, Act.CONSOLE, machine=machine_id, action=action)
        body = await json_object(request)
        try:
            args: dict[str, Any] = {**_target_of(which, body)}
            act = agent.console.act
            said = await anyio.to_thread.run_sync(act, machine_id, Do.PREHEAT, args, caller.name)
        except (AfnError, HTTPException) as exc:
            code = getattr(exc, "code", "invalid")
            gate.record(caller, action, "refused", machine_id, code=code, problem=str(exc)[:200])
            raise
        gate.record(caller, action, "done", machine_id, said=said, **args)
        return Response(status_code=204)

    return r


def _target_of(which: str, body: dict[str, Any]) -> dict[str, float]:
    """The preheat's body: {"bed": °C} or {"hotend": °C}; only `target` is taken (offsets are not kept)."""
    if body.get("command") != "target":
        said = body.get("command")
        raise HTTPException(400, f"{which}: only the 'target' command is taken here, not {said!r}")
    if which == "bed":
        return {"bed": _degrees(body.get("target"), "target")}
    targets = body.get("targets")
    if not isinstance(targets, dict) or not targets or set(targets) - {"tool0"}:
        raise HTTPException(400, "targets: expected {\"tool0\": °C} (one nozzle is driven from here)")
    return {"hotend": _degrees(targets["tool0"], "targets.tool0")}


def _degrees(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HTTPException(400, f"{where}: expected a temperature in °C, got {value!r}")
    return float(value)
