"""Issue 15, classes 3 and 15: who may act on and read what, over real HTTP, on every route.

Ana's job runs on printer-1; she badges out (the job goes on) and Tom badges in. Tom's session token and
the kiosk (which acts for Tom now) must not pause, cancel or release Ana's jobs through either API; each
refusal is audited. Keys scoped to printer-2 neither read nor act on printer-1; members read only their
own jobs; no job shows a path on disk."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_access import SECRET, read_badge, snapshot

SCOPED = {"p2-manager": "p2-manager-key-0123456789", "p2-slicer": "p2-slicer-key-0123456789"}


def scoped_keys() -> str:
    out = ""
    for name, key in SCOPED.items():
        role = name.split("-")[1]
        digest = hashlib.sha256(key.encode()).hexdigest()
        out += f'\n[[api.keys]]\nname = "{name}"\nrole = "{role}"\nmachines = ["printer-2"]\nsha256 = "{digest}"\n'
    return out


@pytest.fixture
def two_printers(tmp_path, start_sim):
    sims = [start_sim("marlin", speed=2), start_sim("marlin", speed=10)]
    machines = [
        {"id": f"printer-{i}", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
         "baud": sim.options["baud"], "tariff": "printer", "reader": "sim"}
        for i, sim in enumerate(sims, 1)
    ]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(path.read_text() + api_table() + scoped_keys()
                    + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')  # fmt: skip
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(), "test")
    for m in agent.machines.values():
        assert m.wait_ready(15)
    yield agent, f"http://127.0.0.1:{agent.api.port}"
    agent.stop()


def h(key: str) -> dict[str, str]:
    return {"X-Api-Key": key}


def upload(url: str, key: str, tmp_path, name: str, machine="printer-1", segments=400) -> dict:
    path = circle_gcode(tmp_path / name, segments, min(0.3, 150 / segments), centre=(110, 110))
    with open(path, "rb") as f:
        r = requests.post(
            f"{url}/v1/jobs", headers=h(key), data={"machine": machine}, files={"file": (name, f)}
        )
    assert r.status_code == 201, r.text
    return r.json()


def refused_rows(agent, action: str) -> list[dict]:
    return [
        a
        for a in agent.ledger.audit_log(None, 1000)
        if a["action"] == f"api:{action}" and a["result"] == "refused"
    ]


def test_nobody_but_the_owner_or_a_manager_acts_on_a_job_through_any_route(two_printers, tmp_path):
    agent, url = two_printers
    running = upload(url, KEYS["ana-slicer"], tmp_path, "ana-run.gcode", segments=4000)
    read_badge(agent, "ana")  # her held job starts on badge-in
    wait_for(lambda: agent.control.running_job("printer-1") is not None, 15, "Ana's job running")
    ana_token = requests.get(f"{url}/v1/kiosk/printer-1").json()["token"]  # the kiosk is on loopback
    read_badge(agent, "ana")  # badge out: the job goes on
    read_badge(agent, "tom")
    tom_token = requests.get(f"{url}/v1/kiosk/printer-1").json()["token"]
    assert tom_token != ana_token
    waiting = upload(url, KEYS["ana-slicer"], tmp_path, "ana-held.gcode")
    assert agent.ledger.job(waiting["id"])["state"] == "held"

    for who, headers in (("tom", h(tom_token)), ("kiosk", {})):
        for action in ("pause", "cancel"):
            r = requests.post(f"{url}/v1/machines/printer-1/{action}", headers=headers)
            assert r.status_code == 403, (who, action, r.text)
        for prefix in ("/octoprint/printer-1", ""):
            for body in ({"command": "pause", "action": "pause"}, {"command": "cancel"},
                         {"command": "pause", "action": "toggle"}):  # fmt: skip
                r = requests.post(f"{url}{prefix}/api/job", headers=headers, json=body)
                assert r.status_code == 403, (who, prefix, body, r.text)
            r = requests.post(f"{url}{prefix}/api/job", headers=headers, json={"command": "start"})
            assert r.status_code == 403, (who, prefix, "start", r.text)
        assert requests.post(f"{url}/v1/jobs/{waiting['id']}/start", headers=headers).status_code == 403
        assert requests.delete(f"{url}/v1/jobs/{waiting['id']}", headers=headers).status_code == 403
    assert agent.machines["printer-1"].state == "printing"
    assert agent.ledger.job(waiting["id"])["state"] == "held"
    # every refusal is in the audit log, with who tried
    assert len(refused_rows(agent, "pause")) == 2 * 5 and len(refused_rows(agent, "cancel")) == 2 * 3
    assert {a["actor"] for a in refused_rows(agent, "job-release")} == {"session:tom", "kiosk"}
    # a manager may, through the OctoPrint route, and that is audited too
    r = requests.post(
        f"{url}/octoprint/printer-1/api/job", headers=h(KEYS["manager"]), json={"command": "cancel"}
    )
    assert r.status_code == 204, r.text
    done = [
        a
        for a in agent.ledger.audit_log("printer-1", 1000)
        if a["action"] == "api:cancel" and a["result"] == "done"
    ]
    assert done and done[0]["actor"] == "manager-max" and done[0]["subject"] == running["id"]


def test_keys_scoped_to_a_machine_and_members_read_only_what_is_theirs(two_printers, tmp_path):
    agent, url = two_printers
    ana_job = upload(url, KEYS["ana-slicer"], tmp_path, "ana.gcode")
    anon_job = upload(url, KEYS["slicer"], tmp_path, "anon.gcode", machine="printer-2")  # (on printer-1
    # an unowned upload becomes the member's who badges in next)
    p2_job = upload(url, SCOPED["p2-slicer"], tmp_path, "p2.gcode", machine="printer-2")
    files = requests.get(f"{url}/octoprint/printer-1/api/files", headers=h(KEYS["ana-slicer"])).json()[
        "files"
    ]
    assert [f["name"] for f in files] == ["ana.gcode"]
    read_badge(agent, "ana")
    p2 = h(SCOPED["p2-manager"])
    assert [m["machine"] for m in requests.get(f"{url}/v1/machines", headers=p2).json()] == ["printer-2"]
    for path in ("/v1/machines/printer-1", "/octoprint/printer-1/api/job", "/octoprint/printer-1/api/printer",
                 "/octoprint/printer-1/api/files", "/v1/kiosk/printer-1", "/v1/audit?machine=printer-1",
                 "/v1/sessions?machine=printer-1", "/v1/audit", "/v1/sessions"):  # fmt: skip
        assert requests.get(f"{url}{path}", headers=p2).status_code == 403, path
    assert {j["id"] for j in requests.get(f"{url}/v1/jobs", headers=p2).json()} == {
        p2_job["id"],
        anon_job["id"],
    }
    assert requests.get(f"{url}/v1/jobs/{ana_job['id']}", headers=p2).status_code == 404
    for action in ("lock", "pause"):
        assert requests.post(f"{url}/v1/machines/printer-1/{action}", headers=p2, json={}).status_code == 403
    assert (
        requests.post(f"{url}/v1/jobs/{ana_job['id']}/move", headers=p2, json={"position": 1}).status_code
        == 403
    )
    r = requests.post(f"{url}/v1/jobs", headers=h(SCOPED["p2-slicer"]), data={"machine": "printer-1"},
                      files={"file": ("x.gcode", b"G28\n")})  # fmt: skip
    assert r.status_code == 403
    assert refused_rows(agent, "lock") and refused_rows(agent, "upload")
    # a member's personal slicer key and session token: their own jobs only, by list and by id
    for key in (KEYS["ana-slicer"], requests.get(f"{url}/v1/kiosk/printer-1").json()["token"]):
        assert {j["id"] for j in requests.get(f"{url}/v1/jobs", headers=h(key)).json()} == {ana_job["id"]}
        assert requests.get(f"{url}/v1/jobs/{anon_job['id']}", headers=h(key)).status_code == 404
    # a shared slicer key sees the queue but not who is at the machine
    status = requests.get(f"{url}/v1/machines/printer-1", headers=h(KEYS["slicer"])).json()
    assert status["session"]["member_id"] is None and status["session"]["member_name"] is None
    assert all(
        j["member_id"] is None for j in requests.get(f"{url}/v1/jobs", headers=h(KEYS["slicer"])).json()
    )
    manager = requests.get(f"{url}/v1/machines/printer-1", headers=h(KEYS["manager"])).json()
    assert manager["session"]["member_id"] == "ana"


def test_a_fault_reason_never_shows_the_spool_path(two_printers, tmp_path):
    agent, url = two_printers
    job = upload(url, KEYS["manager"], tmp_path, "gone.gcode", machine="printer-2")
    spooled = agent.ledger.job(job["id"])["path"]
    with agent.ledger.tx() as c:
        c.execute("UPDATE jobs SET reason=? WHERE id=?", (f"cannot open {spooled}: No such file", job["id"]))
    seen = requests.get(f"{url}/v1/jobs/{job['id']}", headers=h(KEYS["manager"])).json()
    assert str(agent.config.spool_dir) not in json.dumps(seen) and "cannot open" in seen["reason"]
    time.sleep(0)


def test_every_route_that_touches_printer_1_refuses_a_key_scoped_to_printer_2(two_printers, tmp_path):
    """Enumerated from the app's own OpenAPI description, so a route added later is covered too."""
    agent, url = two_printers
    job = upload(url, KEYS["manager"], tmp_path, "p1.gcode")
    app = agent.api.server.config.app  # the FastAPI app inside its ASGI wrappers (BodyLimit, MachineOfKey)
    while not hasattr(app, "openapi"):
        app = app.app
    before = len(agent.ledger.audit_log(None, 10000))
    checked = []
    for template, operations in app.openapi()["paths"].items():
        path = template.replace("{machine_id}", "printer-1").replace("{job_id}", job["id"])
        if "printer-1" not in path and job["id"] not in path:
            continue
        for method in (m.upper() for m in operations):
            body = {"command": "cancel", "position": 1, "reason": "x", "material": "PLA", "member_id": None,
                    "uid": "04A1B2C3"}
            r = requests.request(method, f"{url}{path}", headers=h(SCOPED["p2-manager"]), json=body)
            allowed = (403,) if job["id"] not in path or method != "GET" else (403, 404)
            assert r.status_code in allowed, (method, path, r.status_code, r.text)
            checked.append((method, path))
    assert len(checked) >= 25, checked
    changing = [c for c in checked if c[0] != "GET"]
    refused = [a for a in agent.ledger.audit_log(None, 10000)[: len(agent.ledger.audit_log(None, 10000)) - before]
               if a["result"] == "refused" and a["actor"] == "p2-manager"]  # fmt: skip
    assert len(refused) >= len(changing), "\n".join([*sorted(a["action"] for a in refused), *map(str, changing)])
