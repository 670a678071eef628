"""Contract tests: clients this project did not write, against the agent's real HTTP server.

octorest and pyoctoprintapi (the library of Home Assistant's OctoPrint integration) as they are, and
the exact request sequences of PrusaSlicer's and Cura's OctoPrint uploaders, replayed byte for byte.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import KEYS, api_table, write_config
from tests.integration.test_access import SECRET, read_badge, snapshot


@pytest.fixture
def served(tmp_path, start_sim):
    sim = start_sim("marlin", speed=10)
    machines = [
        {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
         "baud": sim.options["baud"], "tariff": "printer", "reader": "sim"},
        {"id": "printer-2", "class": "fdm-printer", "profile": "prusa-mk3", "port": str(tmp_path / "absent"),
         "tariff": "printer", "reader": "sim"},
    ]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(
        path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n'
    )
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(), "test")
    assert agent.machines["printer-1"].wait_ready(15)
    deadline = time.monotonic() + 10
    while not agent.machines["printer-1"].temperatures and time.monotonic() < deadline:
        time.sleep(0.05)  # the first temperature report
    yield agent, f"http://127.0.0.1:{agent.api.port}"
    agent.stop()


def job_file(tmp_path, name="part.gcode", segments=300):
    return circle_gcode(tmp_path / name, segments, min(0.3, 150 / segments), centre=(110, 110))


def test_octorest(served, tmp_path):
    from octorest import OctoRest

    agent, url = served
    client = OctoRest(url=url, apikey=KEYS["manager"])  # fetches /api/version to check the key
    assert client.version["text"].startswith("OctoPrint")
    assert client.connection_info()["current"]["state"] == "Operational"
    printer = client.printer()
    assert printer["state"]["flags"]["ready"] is True
    info = client.upload(str(job_file(tmp_path)))
    assert info["done"] is True and info["files"]["local"]["name"] == "part.gcode"
    assert [f["name"] for f in client.files()["files"]] == ["part.gcode"]
    client.start()  # a manager's start releases the held upload
    deadline = time.monotonic() + 10
    while client.job_info()["state"] != "Printing" and time.monotonic() < deadline:
        time.sleep(0.05)
    job = client.job_info()
    assert job["job"]["file"]["name"] == "part.gcode" and job["job"]["estimatedPrintTime"] > 0
    assert agent.wait_idle("printer-1", 30)
    assert client.job_info()["state"] == "Operational"
    with pytest.raises(RuntimeError, match="403"):
        OctoRest(url=url, apikey="not-a-key")


def test_pyoctoprintapi(served):
    import aiohttp
    from pyoctoprintapi import OctoprintClient
    from pyoctoprintapi.exceptions import PrinterOffline, UnauthorizedException

    agent, _url = served
    port = agent.api.port

    async def run():
        async with aiohttp.ClientSession() as session:
            client = OctoprintClient("127.0.0.1", session, port, False, "/octoprint/printer-1/")
            client.set_api_key(KEYS["manager"])
            server = await client.get_server_info()
            printer = await client.get_printer_info()
            job = await client.get_job_info()
            tracking = await client.get_tracking_info()
            webcam = await client.get_webcam_info()
            offline = OctoprintClient("127.0.0.1", session, port, False, "/octoprint/printer-2/")
            offline.set_api_key(KEYS["manager"])
            with pytest.raises(PrinterOffline):
                await offline.get_printer_info()
            bad = OctoprintClient("127.0.0.1", session, port, False, "/octoprint/printer-1/")
            bad.set_api_key("wrong")
            with pytest.raises(UnauthorizedException):
                await bad.get_job_info()
            return server, printer, job, tracking, webcam

    server, printer, job, tracking, webcam = asyncio.run(run())
    assert server.version.startswith("1.")
    assert printer.state.flags.operational and not printer.state.flags.printing
    assert {t.name for t in printer.temperatures} >= {"tool0", "bed"}
    assert job.state == "Operational"
    assert tracking is None and webcam is not None


def multipart(
    fields: list[tuple[str, str]], file_field: str, filename: str, body: bytes, boundary: str
) -> bytes:
    """A multipart body as libcurl's form API writes it."""
    out = b""
    for name, value in fields:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + body + b"\r\n"  # fmt: skip
    return out + f"--{boundary}--\r\n".encode()


def request(url: str, method: str, path: str, headers: dict, body: bytes | None = None):
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_prusaslicer_send_to_printer_replay(served, tmp_path):
    """PrusaSlicer (src/slic3r/Utils/OctoPrint.cpp): GET api/version, check `api` and the `text` prefix,
    then POST api/files/local with form fields print, path and file, X-Api-Key on both."""
    agent, url = served
    base = "/octoprint/printer-1/"
    head = {"X-Api-Key": KEYS["ana-slicer"], "Accept": "*/*", "User-Agent": "PrusaSlicer/2.7.1"}
    status, _, data = request(url, "GET", base + "api/version", head)
    version = json.loads(data)
    assert status == 200 and "api" in version and version["text"].startswith("OctoPrint")
    boundary = "------------------------" + uuid.uuid4().hex[:16]
    body = multipart([("print", "true"), ("path", "")], "file", "benchy_0.2mm_PLA.gcode",
                     job_file(tmp_path).read_bytes(), boundary)  # fmt: skip
    headers = {**head, "Content-Type": f"multipart/form-data; boundary={boundary}", "Expect": ""}
    status, resp_headers, data = request(url, "POST", base + "api/files/local", headers, body)
    assert status == 201, data
    assert "/octoprint/printer-1/api/files/local/" in resp_headers["location"]
    (job,) = agent.ledger.jobs("printer-1")
    assert job["state"] == "held" and job["member_id"] == "ana" and job["name"] == "benchy_0.2mm_PLA.gcode"
    assert read_badge(agent, "ana")["action"] == "opened"
    assert agent.wait_idle("printer-1", 30)
    assert agent.ledger.job(job["id"])["state"] == "completed"


def test_cura_octoprint_plugin_replay(served, tmp_path):
    """Cura's OctoPrint connection: version, settings, printer profiles, job and printer state, then an
    upload with select and print (the plugin's order), with its X-Api-Key and User-Agent."""
    agent, url = served
    head = {"X-Api-Key": KEYS["slicer"], "User-Agent": "Cura/5.7.0 (Linux)"}
    for path in ("/api/version", "/api/settings", "/api/printerprofiles", "/api/job", "/api/printer?exclude=history",
                 "/api/connection", "/api/files/local"):  # fmt: skip
        status, _, data = request(url, "GET", path, head)
        assert status == 200, (path, data)
    status, _, data = request(url, "GET", "/api/settings", head)
    assert json.loads(data)["webcam"]["webcamEnabled"] is False
    boundary = "CuraBoundary" + uuid.uuid4().hex
    body = multipart([("select", "true"), ("print", "true")], "file", "CE3_part.gcode",
                     job_file(tmp_path, segments=500).read_bytes(), boundary)  # fmt: skip
    status, _, data = request(
        url,
        "POST",
        "/api/files/local",
        {**head, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        body,
    )
    assert status == 201, data
    reply = json.loads(data)
    assert reply["done"] is True and reply["effectiveSelect"] is True and reply["effectivePrint"] is False
    assert agent.ledger.jobs("printer-1")[0]["state"] == "held", "unowned upload: waits for a badge"
    # wrong type, wrong key: OctoPrint's status codes
    body = multipart([], "file", "model.stl", b"solid\nendsolid\n", boundary)
    status, _, _ = request(
        url,
        "POST",
        "/api/files/local",
        {**head, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        body,
    )
    assert status == 415
    status, _, _ = request(url, "GET", "/api/job", {"X-Api-Key": "wrong"})
    assert status == 403
    status, _, _ = request(
        url, "POST", "/api/job", {**head, "Content-Type": "application/json"}, b'{"command": "start"}'
    )
    assert status == 403, "a slicer key cannot start a job"


def test_cura_login_upload_select_start_poll(served, tmp_path):
    """The Cura OctoPrint plugin's other order: a passive login, the current user, an upload without
    print, then `select` with `print` on the name it uploaded, then polling the job until it runs."""
    agent, url = served
    head = {"X-Api-Key": KEYS["manager"], "User-Agent": "Cura/5.7.0 (Linux)"}
    js = {**head, "Content-Type": "application/json"}
    status, _, data = request(url, "POST", "/api/login", js, b'{"passive": true}')
    assert status == 200, data
    user = json.loads(data)
    assert user["active"] and user["admin"] and {"PRINT", "FILES_UPLOAD"} <= set(user["permissions"])
    status, _, data = request(url, "GET", "/api/currentuser", {"X-Api-Key": KEYS["slicer"]})
    slicer = json.loads(data)
    assert status == 200 and "FILES_UPLOAD" in slicer["permissions"] and "PRINT" not in slicer["permissions"]
    status, _, _ = request(url, "POST", "/api/login", js, b'{"user": "admin", "pass": "x"}')
    assert status == 400, "no password logins"

    boundary = "CuraBoundary" + uuid.uuid4().hex
    body = multipart([("select", "false"), ("print", "false")], "file", "CE3_bracket.gcode",
                     job_file(tmp_path, "bracket.gcode", 400).read_bytes(), boundary)  # fmt: skip
    status, _, data = request(url, "POST", "/api/files/local",
                              {**head, "Content-Type": f"multipart/form-data; boundary={boundary}"}, body)  # fmt: skip
    assert status == 201, data
    assert agent.ledger.jobs("printer-1")[0]["state"] == "held"
    select = b'{"command": "select", "print": true}'
    status, _, _ = request(url, "POST", "/api/files/local/CE3_bracket.gcode",
                           {"X-Api-Key": KEYS["slicer"], "Content-Type": "application/json"}, select)  # fmt: skip
    assert status == 403, "a shared slicer key cannot start a job"
    status, _, _ = request(url, "POST", "/api/files/local/nothing.gcode", js, select)
    assert status == 404
    status, _, data = request(url, "POST", "/api/files/local/CE3_bracket.gcode", js, select)
    assert status == 204, data
    deadline = time.monotonic() + 20
    state = ""
    while time.monotonic() < deadline and state != "Printing":
        status, _, data = request(url, "GET", "/api/job", head)
        state = json.loads(data)["state"]
        time.sleep(0.2)
    assert state == "Printing", state
    assert json.loads(data)["job"]["file"]["name"] == "CE3_bracket.gcode"
    assert any(r["action"] == "job-release" for r in agent.ledger.audit_log("printer-1", 100))
