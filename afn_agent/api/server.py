"""The HTTP face of one agent: FastAPI app factory and the uvicorn server thread that serves it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import AfnError, StorageUnavailable
from . import appkeys, console, kiosk, native, octoprint, octoprint_heat, ownership, pictures
from .auth import Authenticator
from .authz import Act, Gate
from .body_limit import BodyLimit
from .guard import Guard, connection_ceiling, guarded_protocol, raise_fd_limit
from .key_route import MachineOfKey
from .metrics import registry_for

if TYPE_CHECKING:
    from ..agent import Agent

HTTP_CODES = {
    400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found", 409: "conflict",
    413: "too-large", 415: "unsupported-type", 422: "invalid", 503: "unavailable", 507: "storage-full",
}  # fmt: skip
# /v1/kiosk-words and /v1/pair: a screen not yet paired gets its labels, and pairs with a one-time code
PUBLIC = ("/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
          "/v1/kiosk-words", "/v1/pair")  # fmt: skip


def create_app(agent: Agent, guard: Guard | None = None) -> FastAPI:
    cfg = agent.config.api_config()
    auth = Authenticator(cfg)
    auth.stored = agent.keys.find
    if agent.access is not None:
        sessions = agent.access.sessions
        auth.session_open = lambda machine_id, session_id: bool(
            (s := sessions.current(machine_id)) and s["id"] == session_id
        )
    app = FastAPI(
        title="afn-agent",
        version=__version__,
        description="Fab lab machine agent: jobs, quotes, sessions, usage, OctoPrint-style uploads.",
    )
    app.state.agent, app.state.auth = agent, auth
    registry = registry_for(agent)
    gate = Gate(agent, auth)

    @app.middleware("http")
    async def authenticated_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """No anonymous caller gets past here (before any parsing); roles are checked per route."""
        path = request.url.path
        public = path in PUBLIC or path.startswith(("/kiosk/", "/kiosk-static/"))
        open_metrics = path == "/metrics" and auth.config.metrics_public  # auth.config: reloaded in place
        if not public and not open_metrics and auth.identify(request) is None:
            status = 403 if request.headers.get("x-api-key") or request.headers.get("authorization") else 401
            return JSONResponse({"error": "a valid API key is required", "detail": "unauthenticated"}, status)
        return await call_next(request)

    @app.exception_handler(AfnError)
    async def refused(request: Request, exc: AfnError) -> JSONResponse:
        """The one handler of the error family: its status, its sentence and its reason code."""
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        body = {"error": exc.detail, "detail": exc.detail, "code": HTTP_CODES.get(exc.status_code, "error")}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(sqlite3.OperationalError)
    async def ledger_unwritable(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        """A full disk or a failing one: the call did not happen, and says so (not a bare 500)."""
        full = "full" in str(exc).lower()
        err = StorageUnavailable(f"the ledger cannot be written now ({exc}); nothing was changed",
                                 code="storage-full" if full else "storage-error")  # fmt: skip
        return JSONResponse(err.body(), status_code=507 if full else 503)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(x) for x in e["loc"]], "msg": str(e["msg"]), "type": str(e["type"])}
            for e in exc.errors()
        ]
        problems = [f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors]
        return JSONResponse(
            {"error": "; ".join(problems), "detail": errors, "code": "invalid"}, status_code=422
        )

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        bus = agent.bus
        return {
            "ok": True,
            "version": __version__,
            "machines": {m: agent.machines[m].state for m in agent.machines},
            "mqtt": None if bus is None else bus.up,
            "mqtt_network_restarts": None if bus is None else bus.network_restarts,
            "outbox_pending": agent.ledger.outbox_pending(),
            "ledger_error": agent.ledger_error or None,
            "directory": None if agent.access is None else agent.access.sync_status.view(),
            "notify": None if agent.notifier is None else agent.notifier.view(),
            "http": None
            if guard is None
            else {
                "open": len(guard.open),
                "ceiling": guard.max_total,
                "refused": guard.refused,
                "timed_out": guard.timed_out,
            },
        }

    @app.get("/metrics", tags=["health"])
    def metrics(request: Request) -> Response:
        if not auth.config.metrics_public:
            gate.allow(request, Act.OVERSEE)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(native.build(agent, auth))
    app.include_router(ownership.build(agent, auth))
    app.include_router(console.build(agent, auth))
    app.include_router(pictures.build(agent, auth))
    app.include_router(kiosk.build(agent, auth, cfg.octoprint_machine or next(iter(agent.machines))))
    app.include_router(appkeys.manage(agent, auth))
    faces = [(cfg.octoprint_machine, "")] if cfg.octoprint_machine else []
    for machine_id, prefix in faces + [(m, f"/octoprint/{m}") for m in agent.machines]:
        app.include_router(octoprint.build(agent, auth, machine_id, prefix))
        app.include_router(octoprint_heat.build(agent, auth, machine_id, prefix))
        app.include_router(appkeys.face(agent, auth, machine_id, prefix))
    return app


class ApiServer:
    """uvicorn in a thread of the agent process; `port` is the bound one (config port 0 picks one)."""

    def __init__(self, agent: Agent) -> None:
        cfg = agent.config.api_config()
        ceiling = connection_ceiling(cfg.max_connections, len(agent.machines), raise_fd_limit())
        self.guard = Guard(ceiling, min(cfg.max_connections_per_client, ceiling), cfg.header_timeout_s,
                           cfg.body_timeout_s)  # fmt: skip
        inner = create_app(agent, self.guard)
        self.auth: Authenticator = inner.state.auth
        routed = MachineOfKey(inner, self.auth, cfg.octoprint_machine, list(agent.machines))
        app = BodyLimit(routed, int(cfg.max_upload_mb * 1_000_000) + 64 * 1024)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, lifespan="off",
                http=guarded_protocol(self.guard), timeout_keep_alive=5,
            )
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.port = cfg.port

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the HTTP API did not start (port in use?)")
        sockets = [s for server in self.server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
