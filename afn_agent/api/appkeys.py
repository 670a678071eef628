"""OctoPrint's Application Keys flow on every machine's face, and the manager's side of it.

Home Assistant (and any OctoPrint app) probes, asks for a key and polls; the key is granted by a manager
from the API, the CLI or the fleet dashboard, never automatically. A granted key reads its one machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..ledger.appkeys import AppKeyRequests, Poll
from .auth import Authenticator, _presented
from .authz import Act, Gate
from .body_limit import json_object

if TYPE_CHECKING:
    from ..agent import Agent

PLUGIN = "/plugin/appkeys"


class Decision(BaseModel):
    grant: bool = Field(description="true: make the key when the application collects it; false: refuse")


def face(agent: Agent, auth: Authenticator, machine_id: str, prefix: str) -> APIRouter:
    """The plugin's three public routes under one machine's OctoPrint face."""
    r = APIRouter(prefix=prefix, tags=["octoprint"])
    gate = Gate(agent, auth)
    requests = AppKeyRequests(agent.keys)

    def shown_key_fits(request: Request, act: Act, action: str = "") -> None:
        """Anyone may ask (that is the flow); a key that is shown must still fit this machine."""
        if _presented(request):
            gate.allow(request, act, machine=machine_id, action=action)

    @r.get(f"{PLUGIN}/probe", status_code=204)
    def probe(request: Request) -> Response:
        shown_key_fits(request, Act.READ)
        return Response(status_code=204)

    @r.post(f"{PLUGIN}/request", status_code=201)
    async def ask(request: Request) -> JSONResponse:
        shown_key_fits(request, Act.APPKEY, "appkey-request")
        origin = request.client.host if request.client else "?"
        who = f"app@{origin}"
        try:
            body = await json_object(request)
            who = f"app:{str(body.get('app'))[:40]}@{origin}"
            token, row = requests.open(machine_id, body.get("app"), body.get("user"), origin)
        except Exception as exc:
            agent.ledger.audit(who, "appkey-request", "refused", machine_id, None, problem=str(exc)[:200])
            raise
        agent.ledger.audit(who, "appkey-request", "waiting", machine_id, None, request=row["id"])
        said = {"request": row["id"], "app": row["app"], "user": row["user_name"]}
        agent.publisher.event(machine_id, "appkey_requested", said)
        return JSONResponse(
            {"app_token": token}, status_code=201, headers={"Location": f"{prefix}{PLUGIN}/request/{token}"}
        )

    @r.get(f"{PLUGIN}/request/{{app_token}}")
    def poll(app_token: str, request: Request) -> JSONResponse:
        shown_key_fits(request, Act.READ)
        state, key, row = requests.poll(app_token)
        if state is Poll.PENDING:
            return JSONResponse({"message": "waiting for a manager of the lab to grant this key"}, 202)
        if state is Poll.GONE or row is None:
            return JSONResponse({"error": "denied, expired or unknown request: ask again"}, 404)
        agent.ledger.audit(f"app:{row['app'][:40]}", "appkey-collect", "granted", machine_id, None,
                           request=row["id"], key_id=row["key_id"])  # fmt: skip
        return JSONResponse({"api_key": key}, 200)

    return r


def manage(agent: Agent, auth: Authenticator) -> APIRouter:
    """What a manager sees and decides (the CLI and the fleet dashboard decide through the same table)."""
    r = APIRouter(tags=["access"])
    gate = Gate(agent, auth)
    requests = AppKeyRequests(agent.keys)

    @r.get("/v1/appkeys")
    def waiting(request: Request) -> list[dict[str, Any]]:
        """Applications waiting for a key, oldest first."""
        caller = gate.allow(request, Act.OVERSEE)
        return [row for row in requests.pending() if caller.may_use(row["machine_id"])]

    @r.post("/v1/appkeys/{request_id}")
    def decide(request_id: str, body: Decision, request: Request) -> dict[str, Any]:
        """Grant or deny one request; the application collects a granted key on its next poll."""
        caller = gate.allow(request, Act.MANAGE, action="appkey-decision")
        machine = next((row["machine_id"] for row in requests.pending() if row["id"] == request_id), None)
        if machine is not None:
            gate.allow(request, Act.MANAGE, machine=machine, action="appkey-decision")
        row = requests.decide(request_id, body.grant, caller.name)  # NotFound (404) if none waits
        gate.record(caller, "appkey-decision", row["decision"], row["machine_id"], request=request_id)
        said = {"request": request_id, "decision": row["decision"], "actor": caller.name}
        agent.publisher.event(row["machine_id"], "appkey_decided", said)
        return row

    return r
