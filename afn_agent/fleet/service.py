"""`afn-agent fleet`: the fab manager's live view of every machine, from the broker alone.

Read-only for anyone on the lab's network; a manager who signs in can lock, unlock, pause, resume and
cancel — through the same signed MQTT commands the agents verify (afn_agent/bus/tokens.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from .. import i18n
from ..bus import nodes
from ..bus.tokens import sign
from ..bus.topics import COMMAND, Topics
from ..config import BrokerConfig, ConfigError, broker_config, validated
from ..config_errors import sentences
from ..config_model import FleetFile
from ..ledger.keys import PAIRING_S, digest, new_pairing_code
from ..secret_text import new_secret
from .history import History
from .history_routes import add_history_routes
from .state import FleetState
from .view import event_view, machine_view

STATIC = Path(__file__).with_name("static")
COOKIE = "afn_fleet"
SIGN_IN_S = 12 * 3600
COMMANDS = ("pause", "resume", "cancel", "lock", "unlock", "confirm", "estop", "clear-alarms")


@dataclass(frozen=True)
class FleetConfig:
    path: Path
    site: str
    host: str
    port: int
    command_secret: str | None
    managers: dict[str, str]  # name -> sha256 of their key
    broker: BrokerConfig
    data_dir: Path | None = None  # the job history's directory; None: no history kept
    labs: tuple[str, ...] = ()  # more sites on this dashboard, each a lab
    manager_labs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> the labs they steer

    @property
    def sites(self) -> tuple[str, ...]:
        """Every lab on this dashboard, its own site first."""
        return (self.site, *self.labs)


def load_fleet_config(path: str | Path) -> FleetConfig:
    """The dashboard's configuration; a ConfigError lists every mistake in the file at once."""
    file = Path(path)
    model, raw, text, found = validated(FleetFile, file)
    if model is None or found:
        raise ConfigError("\n".join(sentences(found, file, raw, text)))
    f = model.fleet
    return FleetConfig(path=file, site=f.site, host=f.host, port=f.port, command_secret=f.command_secret,
                       managers={m.name: m.sha256 for m in f.managers},
                       broker=broker_config(model.broker), data_dir=file.parent / f.data_dir,
                       labs=tuple(f.labs),
                       manager_labs={m.name: tuple(m.labs) for m in f.managers if m.labs})  # fmt: skip


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


class LoginBody(BaseModel):
    name: str
    key: str


class CommandBody(BaseModel):
    command: str
    reason: str = "maintenance"


class KeyDecision(BaseModel):
    grant: bool


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.topics = Topics(config.broker.topic_prefix, config.site)
        self.history = History(config.data_dir / "history.sqlite3") if config.data_dir else None
        self.state = FleetState(self.topics, self.history, config.labs)
        self.signed_in: dict[str, tuple[str, float]] = {}
        self.connected = threading.Event()
        self.nodes = nodes.of(config.broker)
        self.client = self._client()
        self.server: uvicorn.Server | None = None
        self.port = config.port

    def _client(self) -> mqtt.Client:
        b, where = self.config.broker, self.config.data_dir
        # With a history, one lasting session per installation: the broker keeps the usage records
        # published while the dashboard is down (QoS 1) and hands them over when it is back; unless the
        # broker's sessions are not to be relied on (session = "clean", docs/mqtt.md).
        tail = secrets.token_hex(3) if where is None else _short(str(where.resolve()))
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"afn-fleet-{self.config.site}-{tail}",
            clean_session=where is None or b.session == "clean",
        )  # fmt: skip
        if b.username:
            c.username_pw_set(b.username, b.password)
        if b.tls:
            c.tls_set(
                ca_certs=b.ca_file, certfile=b.cert_file, keyfile=b.key_file, cert_reqs=ssl.CERT_REQUIRED
            )
        c.on_connect = self._on_connect
        self.nodes.attach(c, lambda *a: self.connected.clear())  # a clustered broker's nodes, in turn
        c.on_message = lambda client, userdata, msg: self.state.on_message(msg.topic, bytes(msg.payload))
        return c

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            return
        qos = 0 if self.config.broker.session == "clean" else 1
        client.subscribe([(f"{self.topics.prefix}/{site}/#", qos) for site in self.config.sites])
        self.connected.set()

    def start(self) -> Fleet:
        (host, port), keepalive = self.nodes.current, self.config.broker.keepalive_s
        self.client.connect_async(host, port, keepalive)
        self.client.loop_start()
        config = uvicorn.Config(
            self.app(), host=self.config.host, port=self.config.port, log_level="warning", access_log=False,
            lifespan="off",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        threading.Thread(target=self.server.run, name="fleet-http", daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self.server:
            self.server.should_exit = True
        self.client.disconnect()
        self.client.loop_stop()
        if self.history is not None:
            self.history.close()

    # ---- web ----------------------------------------------------------------------------------------
    def manager(self, request: Request) -> str | None:
        token = request.cookies.get(COOKIE, "")
        entry = self.signed_in.get(hashlib.sha256(token.encode()).hexdigest()) if token else None
        return entry[0] if entry and entry[1] > time.monotonic() else None

    def labs_of(self, name: str | None) -> tuple[str, ...]:
        """The labs a signed-in manager steers (every lab of the dashboard unless their entry names some);
        nobody's: none."""
        if name is None:
            return ()
        return self.config.manager_labs.get(name) or self.config.sites

    def steers(self, name: str | None, key: str) -> bool:
        return self.state.locate(key)[0] in self.labs_of(name)

    def manager_of(self, request: Request, key: str) -> str:
        """The signed-in manager of that machine's lab, or 401 (nobody) / 403 (another lab's)."""
        name = self.manager(request)
        if name is None:
            raise HTTPException(401, "sign in as a manager first")
        if not self.steers(name, key):
            raise HTTPException(403, f"{name} does not manage {self.state.locate(key)[0]}")
        return name

    def present(self, kind: str, data: Any, name: str | None) -> Any:
        """One change as this audience sees it: member names, pictures and key requests only for a
        manager of that machine's lab; events in words."""
        key = str(data.get("key") or data.get("id") or "") if isinstance(data, dict) else ""
        manager = self.steers(name, key)
        if kind == "machine":
            return machine_view(data, manager, self.state.names)
        if kind == "event":
            return event_view(data, self.state.names, manager)
        if kind == "picture" and not manager:
            return {"id": data["id"]}  # that there is one, not of what
        return data

    def snapshot(self, name: str | None) -> dict[str, Any]:
        snap = self.state.snapshot()
        names = self.state.names

        def may(key: str) -> bool:
            return self.steers(name, key)

        snap["machines"] = {k: machine_view(v, may(k), names) for k, v in snap["machines"].items()}
        snap["events"] = [event_view(e, names, may(e.get("key", ""))) for e in snap["events"]]
        snap["key_requests"] = [r for r in snap["key_requests"] if may(r["machine"])]
        snap["pictures"] = {m: facts for m, (_, facts) in self.state.pictures.items() if may(m)}
        snap["labs"] = list(self.config.sites)
        return snap

    def send(self, asked: Request, key: str, command: str, **args: Any) -> tuple[dict[str, Any], bool]:
        """A signed command from the signed-in manager to one machine's agent: (the token, handed over).
        `args` are the command's (an app-key decision has its own `request`). Only in the manager's labs."""
        if self.manager(asked) is not None and key not in self.state.machines:
            raise HTTPException(404, f"no machine {key!r} on the bus")
        name = self.manager_of(asked, key)
        if not self.config.command_secret:
            raise HTTPException(409, "this dashboard has no command_secret")
        site, machine_id = self.state.locate(key)
        token = sign(self.config.command_secret, command, machine_id, name, **args)
        topic = Topics(self.topics.prefix, site).machine(machine_id, COMMAND)
        info = self.client.publish(topic, json.dumps(token), qos=1)
        return token, info.rc == mqtt.MQTT_ERR_SUCCESS

    def app(self) -> FastAPI:
        app = FastAPI(title="afn-agent fleet", docs_url=None, redoc_url=None)

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(STATIC / "fleet.html")

        @app.get("/history", include_in_schema=False)
        def history_page() -> FileResponse:
            return FileResponse(STATIC / "history.html")

        @app.get("/charts", include_in_schema=False)
        def charts_page() -> FileResponse:
            return FileResponse(STATIC / "charts.html")

        @app.get("/static/{name}", include_in_schema=False)
        def static(name: str) -> FileResponse:
            if name not in ("fleet.js", "fleet.css", "history.js", "charts.js", "words.js"):
                raise HTTPException(404)
            return FileResponse(STATIC / name)

        @app.get("/static/vendor/{name}", include_in_schema=False)
        def vendor(name: str) -> FileResponse:
            """uPlot, shipped with the package (no CDN, no build step)."""
            if name not in ("uPlot.iife.min.js", "uPlot.min.css"):
                raise HTTPException(404)
            return FileResponse(STATIC / "vendor" / name)

        def labs_of(request: Request) -> tuple[str, ...] | None:
            name = self.manager(request)
            return None if name is None else self.labs_of(name)

        add_history_routes(app, self.history, labs_of, self.state.names)

        @app.get("/api/words")
        def words(lang: str = "en") -> dict[str, Any]:
            """The page's words in one language (the same catalogues as the machine's console)."""
            chosen = lang if lang in i18n.LANGUAGES else "en"
            return {"lang": chosen, "text": i18n.texts(chosen, "fleet.", "state.", "outcome.", "prompt.")}

        @app.get("/api/fleet")
        def fleet(request: Request) -> dict[str, Any]:
            name = self.manager(request)
            return {**self.snapshot(name), "manager": name, "broker": self.connected.is_set()}

        @app.get("/api/machines/{machine_id}/temperatures")
        def temperatures(machine_id: str) -> dict[str, Any]:
            """The machine's temperature curve over the last hour (a point every few seconds)."""
            if machine_id not in self.state.machines:
                raise HTTPException(404, f"no machine {machine_id!r} on the bus")
            return {"machine": machine_id, "points": self.state.curve(machine_id)}

        @app.get("/api/machines/{machine_id}/picture.jpg")
        def picture(machine_id: str, request: Request) -> Response:
            """The machine's latest camera thumbnail (managers: a camera may show people)."""
            self.manager_of(request, machine_id)
            found = self.state.picture(machine_id)
            if found is None:
                raise HTTPException(404, f"no picture of {machine_id!r}")
            return Response(found[0], media_type="image/jpeg", headers={"Cache-Control": "no-store"})

        @app.get("/api/stream")
        async def stream(request: Request) -> StreamingResponse:
            manager = self.manager(request)  # decided once: signing in reloads the stream

            async def events() -> AsyncIterator[str]:
                snap = self.snapshot(manager)
                version = snap["version"]
                yield f"event: snapshot\ndata: {json.dumps(snap)}\n\n"
                while not await request.is_disconnected():
                    await asyncio.to_thread(self.state.wait, version, 1.0)
                    version, changes = self.state.changes_since(version)
                    for kind, data in changes:
                        said = json.dumps(self.present(kind, data, manager))
                        yield f"event: {kind}\ndata: {said}\n\n"

            return StreamingResponse(
                events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
            )

        @app.post("/api/login")
        def login(body: LoginBody, response: Response) -> dict[str, str]:
            want = self.config.managers.get(body.name)
            got = hashlib.sha256(body.key.encode()).hexdigest()
            if want is None or not hmac.compare_digest(want, got):
                raise HTTPException(403, "unknown manager or wrong key")
            token = new_secret(24)
            self.signed_in[hashlib.sha256(token.encode()).hexdigest()] = (
                body.name,
                time.monotonic() + SIGN_IN_S,
            )
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=SIGN_IN_S)
            return {"manager": body.name}

        @app.post("/api/machines/{machine_id}/command")
        def command(machine_id: str, body: CommandBody, request: Request) -> dict[str, Any]:
            if body.command not in COMMANDS:
                raise HTTPException(422, f"command must be one of {', '.join(COMMANDS)}")
            args: dict[str, Any] = {"reason": body.reason} if body.command == "lock" else {}
            token, sent = self.send(request, machine_id, body.command, **args)
            return {"sent": sent, "nonce": token["nonce"]}

        @app.post("/api/machines/{machine_id}/pairing-code")
        def pairing_code(machine_id: str, request: Request) -> dict[str, Any]:
            """Six digits for a screen at that machine; only their hash goes to the agent, signed."""
            code = new_pairing_code()
            _, sent = self.send(request, machine_id, "pairing-code", code_sha256=digest(code))
            return {"sent": sent, "code": code, "valid_s": PAIRING_S, "console": f"/kiosk/{machine_id}"}

        @app.post("/api/machines/{machine_id}/appkeys/{request_id}")
        def appkey_decision(
            machine_id: str, request_id: str, body: KeyDecision, request: Request
        ) -> dict[str, Any]:
            """Grant or deny an application's key request at that machine (Home Assistant's set-up)."""
            decision = {"request": request_id, "grant": body.grant}
            token, sent = self.send(request, machine_id, "appkey-decision", **decision)
            return {"sent": sent, "nonce": token["nonce"]}

        return app
