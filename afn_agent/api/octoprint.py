"""The part of OctoPrint's REST API that slicers and dashboards use, so they work unchanged.

`/api/…` is the configured default machine; every machine is also at `/octoprint/<id>/api/…`
(PrusaSlicer, Cura and pyoctoprintapi accept a path in the host URL). Uploads become jobs that wait for
their owner's badge at the machine, as the fab-lab flow wants; nothing prints from a laptop alone.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from .. import __version__
from ..machine.events import OFFLINE_STATES, STOPPED_STATES
from .auth import Authenticator, Caller
from .authz import ROLES, Act, Gate
from .body_limit import json_object
from .native import _submit, run_command
from .octoprint_heat import temperatures

if TYPE_CHECKING:
    from ..agent import Agent

OCTOPRINT_VERSION = "1.10.2"
STATE_TEXT = {
    "idle": "Operational",
    "printing": "Printing",
    "paused": "Paused",
    "waiting": "Paused",  # waiting for a person (M0, a tool or filament change): OctoPrint shows Paused
    "disconnected": "Offline",
    "connecting": "Connecting",
    "resetting": "Connecting",
    "alarm": "Error",
    "fault": "Error",
}
COMMANDS: dict[Any, str] = {"cancel": "cancel", ("pause", "pause"): "pause", ("pause", "resume"): "resume"}


def build(agent: Agent, auth: Authenticator, machine_id: str, prefix: str) -> APIRouter:
    r = APIRouter(prefix=prefix, tags=["octoprint"])

    gate = Gate(agent, auth)

    def who(request: Request, act: Act = Act.READ, **kw: Any) -> Caller:
        return gate.allow(request, act, machine=machine_id, **kw)

    @r.get("/api/version")
    def version(request: Request) -> dict[str, Any]:
        who(request)
        return {
            "api": "0.1",
            "server": OCTOPRINT_VERSION,
            "text": f"OctoPrint {OCTOPRINT_VERSION} (afn-agent {__version__})",
        }

    @r.get("/api/server")
    def server(request: Request) -> dict[str, Any]:
        who(request)
        return {"version": OCTOPRINT_VERSION, "safemode": None}

    @r.get("/api/settings")
    def settings(request: Request) -> dict[str, Any]:
        who(request)
        return {
            "api": {"allowCrossOrigin": False},
            "appearance": {"name": machine_id, "color": "default"},
            "feature": {"sdSupport": False, "temperatureGraph": True},
            "folder": {"uploads": "/"},
            "webcam": {
                "webcamEnabled": False,
                "streamUrl": "",
                "snapshotUrl": "",
                "flipH": False,
                "flipV": False,
                "rotate90": False,
            },
            "plugins": {"discovery": discovery_settings(agent, machine_id, prefix)},
        }

    @r.get("/api/printerprofiles")
    def profiles(request: Request) -> dict[str, Any]:
        who(request)
        return {"profiles": {"_default": _profile(agent, machine_id)}}

    @r.get("/api/connection")
    def connection(request: Request) -> dict[str, Any]:
        who(request)
        m = agent.machines[machine_id]
        state = STATE_TEXT.get(m.state, "Offline")
        return {
            "current": {
                "state": state,
                "port": m.link.port_name,
                "baudrate": m.link.baud,
                "printerProfile": "_default",
            },
            "options": {
                "ports": [m.link.port_name],
                "baudrates": [m.link.baud],
                "printerProfiles": [{"id": "_default", "name": machine_id}],
                "portPreference": m.link.port_name,
                "baudratePreference": m.link.baud,
                "printerProfilePreference": "_default",
                "autoconnect": True,
            },
        }

    @r.post("/api/connection", status_code=204)
    async def connection_command(request: Request) -> Response:
        caller = who(request, Act.MANAGE, action="connection")
        body = await json_object(request)
        if body.get("command") not in ("connect", "disconnect", "fake_ack"):
            raise HTTPException(400, "command must be connect, disconnect or fake_ack")
        if body["command"] == "connect":
            agent.machines[machine_id].reconnect()
        gate.record(caller, "connection", body["command"], machine_id)
        return Response(status_code=204)

    @r.get("/api/printer")
    def printer(request: Request) -> Any:
        who(request)
        m = agent.machines[machine_id]
        if m.state in OFFLINE_STATES:
            return JSONResponse({"error": "Printer is not operational"}, status_code=409)
        temps = temperatures(m)
        printing, paused = m.state == "printing", m.state in ("paused", "waiting")  # waiting: M0, M600 …
        error = m.state in STOPPED_STATES
        flags = {
            "operational": not error,
            "printing": printing,
            "paused": paused,
            "pausing": False,
            "cancelling": False,
            "resuming": False,
            "finishing": False,
            "sdReady": False,
            "error": error,
            "ready": m.state == "idle",
            "closedOrError": error,
        }
        return {
            "temperature": temps,
            "sd": {"ready": False},
            "state": {"text": STATE_TEXT[m.state], "flags": flags},
        }

    @r.get("/api/job")
    def job(request: Request) -> dict[str, Any]:
        caller = who(request)
        m = agent.machines[machine_id]
        status = agent.control.status(machine_id)
        running = agent.control.running_job(machine_id)
        if running is None:
            return {
                "job": {
                    "file": {"name": None, "origin": None, "size": None, "date": None},
                    "estimatedPrintTime": None,
                    "filament": None,
                    "user": None,
                },
                "progress": {
                    "completion": None,
                    "filepos": None,
                    "printTime": None,
                    "printTimeLeft": None,
                    "printTimeLeftOrigin": None,
                },
                "state": STATE_TEXT.get(m.state, "Offline"),
            }
        estimate = json.loads(running["estimate_json"] or "{}")
        progress = status["job"]["progress"] if status["job"] else 0.0
        figures = agent.control.job_figures(machine_id)
        elapsed = figures["total_s"] if figures else 0.0
        return {
            "job": {
                "file": {
                    "name": running["name"],
                    "display": running["name"],
                    "path": running["name"],
                    "origin": "local",
                    "size": running["bytes"],
                    "date": None,
                },
                "estimatedPrintTime": estimate.get("time_s"),
                "filament": {"tool0": {"length": estimate.get("material_mm"), "volume": None}},
                "user": running["member_id"] if gate.may_name(caller, running["member_id"]) else None,
            },
            "progress": {
                "completion": round(progress * 100, 2),
                "filepos": int(progress * running["bytes"]),
                "printTime": int(elapsed),
                "printTimeLeft": status["job"]["eta_s"] if status["job"] else None,
                "printTimeLeftOrigin": "estimate",
            },
            "state": STATE_TEXT.get(m.state, "Offline"),
        }

    @r.post("/api/job", status_code=204)
    async def job_command(request: Request) -> Response:
        body = await json_object(request)
        command, action = body.get("command"), body.get("action")
        if command == "start":
            return release_next(request)
        if command == "pause" and action == "toggle":
            action = "resume" if agent.machines[machine_id].state == "paused" else "pause"
        name = COMMANDS.get(command) if command == "cancel" else COMMANDS.get((command, action or "pause"))
        if name is None:
            raise HTTPException(
                400, "command must be start, cancel or pause (action pause, resume or toggle)"
            )
        caller = who(request, Act.CONTROL, job=agent.control.running_job(machine_id), action=name)
        run_command(agent, gate, caller, machine_id, name)
        return Response(status_code=204)

    def release_next(request: Request) -> Response:
        """OctoPrint's `start`: the first held job the caller may release (its own; any, for a manager)."""
        held = agent.ledger.jobs(machine_id, ("held",))
        reader = who(request)
        mine = next((j for j in held if gate.owns(reader, j)), None)
        if not held:
            raise HTTPException(409, "no job waiting to start on this machine")
        caller = who(request, Act.RELEASE, job=mine, action="job-release")  # refused: none is theirs
        assert mine is not None  # a manager owns every job; anyone else was refused above
        agent.control.release_job(
            mine["id"], caller.name, manager=caller.role == "manager"
        )  # AfnError: the handler
        return Response(status_code=204)

    @r.get("/api/files")
    @r.get("/api/files/local")
    def files(request: Request) -> dict[str, Any]:
        caller = who(request)
        jobs = [j for j in agent.ledger.jobs(machine_id, ("queued", "held")) if gate.sees(caller, j)]
        return {"files": [_file_entry(request, prefix, j) for j in jobs], "free": _free(agent), "total": None}

    @r.post("/api/files/local", status_code=201)
    async def upload(
        request: Request,
        response: Response,
        file: Annotated[UploadFile | None, File()] = None,
        path: Annotated[str | None, Form()] = None,
        print: Annotated[str | None, Form()] = None,  # OctoPrint's field name
        select: Annotated[str | None, Form()] = None,
        userdata: Annotated[str | None, Form()] = None,
        foldername: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        caller = who(request, Act.UPLOAD, action="upload")
        if file is None:
            if foldername:
                raise HTTPException(400, "folders are not kept: every upload is a job in the machine's queue")
            raise HTTPException(400, "no file to upload (multipart field 'file')")
        if (
            print is not None
            and print.lower() == "true"
            and agent.machines[machine_id].state in STOPPED_STATES
        ):
            raise HTTPException(
                409, f"{machine_id} is in {agent.machines[machine_id].state}; it cannot print now"
            )
        owner = caller.member
        entry = await _submit(agent, file, machine_id, caller, owner, None, held=None)
        job = agent.control.job(entry["id"])
        location = f"{request.base_url}{prefix.lstrip('/')}{'/' if prefix else ''}api/files/local/{job['id']}"
        response.headers["Location"] = location
        return {
            "files": {"local": _file_entry(request, prefix, job)},
            "done": True,
            "effectiveSelect": True,
            "effectivePrint": job["state"] == "queued",
        }

    @r.post("/api/files/sdcard")
    def sdcard(request: Request) -> None:
        caller = who(request, Act.UPLOAD, action="upload-sd")
        gate.record(caller, "upload-sd", "refused", machine_id, code="no-sd-card")
        raise HTTPException(409, "no SD card: jobs are streamed by the agent")

    @r.get("/api/currentuser")
    def currentuser(request: Request) -> dict[str, Any]:
        """Who the key is, with OctoPrint's permission names for what its role may do here."""
        return _user(who(request))

    @r.post("/api/login")
    async def login(request: Request) -> dict[str, Any]:
        """A passive login (Cura, Home Assistant): the key's user; no session cookie is ever made."""
        caller = who(request, Act.UPLOAD, action="login")  # the slicers' and people's; refusals audited
        body = await json_object(request)
        if not body.get("passive") and ("user" in body or "pass" in body):
            said = "only passive logins with an API key: user names and passwords are not kept"
            raise HTTPException(400, said)
        return {**_user(caller), "active": True, "user": True, "admin": caller.role == "manager",
                "apikey": None, "settings": {}, "_login_mechanism": "apikey"}  # fmt: skip

    @r.post("/api/files/local/{name}", status_code=204)
    async def select(name: str, request: Request) -> Response:
        """OctoPrint's `select` (and `print`) of an uploaded file, by the name it was uploaded as or by its
        id: the job is already in the queue; `print: true` releases it as `start` would."""
        reader = who(request, Act.UPLOAD, action="file-select")  # before the body: no 400 to strangers
        body = await json_object(request)
        if body.get("command") != "select":
            raise HTTPException(400, "command must be select: files are not moved, copied or sliced here")
        jobs = [j for j in agent.ledger.jobs(machine_id, ("held", "queued")) if gate.sees(reader, j)]
        job = next((j for j in jobs if j["id"] == name), None) or next(
            (j for j in reversed(jobs) if j["name"] == name), None
        )
        if job is None:
            raise HTTPException(404, "no such file waiting on this machine")
        if body.get("print") in (True, "true") and job["state"] == "held":
            caller = who(request, Act.RELEASE, job=job, action="job-release")
            agent.control.release_job(job["id"], caller.name, manager=caller.role == "manager")
        return Response(status_code=204)

    @r.get("/api/files/local/{job_id}")
    def file_info(job_id: str, request: Request) -> dict[str, Any]:
        caller = who(request)
        job = agent.ledger.job(job_id)
        if job is None or job["machine_id"] != machine_id or not gate.sees(caller, job):
            raise HTTPException(404, "no such file")
        return _file_entry(request, prefix, job)

    return r


def discovery_settings(agent: Agent, machine_id: str, prefix: str) -> dict[str, Any]:
    """What OctoPrint's discovery plugin says of an instance; Home Assistant keys its entry on `upnpUuid`,
    so it is the same for a machine whatever the agent's address or restarts (site and machine id)."""
    stable = uuid.uuid5(uuid.NAMESPACE_URL, f"afn-agent:{agent.config.site}/{machine_id}")
    return {
        "upnpUuid": str(stable),
        "pathPrefix": f"{prefix}/",
        "model": {"name": "afn-agent", "description": machine_id, "number": __version__},
    }


PERMISSIONS = {  # what a role may do here, in OctoPrint's permission names (clients grey out the rest)
    Act.READ: ("STATUS", "SETTINGS_READ", "FILES_LIST", "CONNECTION"),
    Act.UPLOAD: ("FILES_UPLOAD", "FILES_SELECT"),
    Act.RELEASE: ("PRINT",),
    Act.CONTROL: ("PRINT", "CONTROL"),
}


def _user(caller: Caller) -> dict[str, Any]:
    granted = sorted({p for act, names in PERMISSIONS.items() if caller.role in ROLES[act] for p in names})
    groups = ["admins", "users"] if caller.role == "manager" else ["users"]
    return {"name": caller.name, "groups": groups, "permissions": granted}


def _profile(agent: Agent, machine_id: str) -> dict[str, Any]:
    profile = agent.machines[machine_id].profile
    vol = profile.volume.axes
    size = {k: (vol[k][1] - vol[k][0]) if k in vol else 0 for k in ("x", "y", "z")}
    return {
        "id": "_default",
        "name": machine_id,
        "model": profile.description,
        "current": True,
        "default": True,
        "heatedBed": profile.kind == "printer",
        "heatedChamber": False,
        "volume": {
            "width": size["x"],
            "depth": size["y"],
            "height": size["z"],
            "formFactor": "rectangular",
            "origin": "lowerleft",
        },
        "extruder": {"count": 1, "nozzleDiameter": 0.4, "sharedNozzle": False},
    }


def _file_entry(request: Request, prefix: str, job: dict[str, Any]) -> dict[str, Any]:
    base = f"{request.base_url}{prefix.lstrip('/')}{'/' if prefix else ''}api/files/local/{job['id']}"
    estimate = json.loads(job["estimate_json"] or "{}")
    return {
        "name": job["name"],
        "display": job["name"],
        "path": job["id"],
        "origin": "local",
        "type": "machinecode",
        "typePath": ["machinecode", "gcode"],
        "size": job["bytes"],
        "hash": job["sha256"],
        "gcodeAnalysis": {
            "estimatedPrintTime": estimate.get("time_s"),
            "filament": {"tool0": {"length": estimate.get("material_mm")}},
        },
        "afn": {"job_id": job["id"], "state": job["state"], "quote": estimate.get("quote")},
        "refs": {"resource": base, "download": base},
    }


def _free(agent: Agent) -> int:
    import shutil

    return shutil.disk_usage(
        agent.config.spool_dir if agent.config.spool_dir.exists() else agent.config.data_dir
    ).free

