"""The HTTP API through the ASGI client: roles, hostile uploads, the held-upload flow, queue, usage pull."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from afn_agent.agent import Agent
from afn_agent.api.server import create_app
from afn_agent.config import load_config
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_access import SECRET, UIDS, read_badge, snapshot


@pytest.fixture
def api_printer(tmp_path, start_sim):
    agents = []

    def make(max_upload_mb: float = 50.0, **machine_extra):
        sim = start_sim("marlin", speed=10)
        machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "reader": "sim", **machine_extra}  # fmt: skip
        machine = {k: v for k, v in machine.items() if v is not None}
        path = write_config(tmp_path / "agent.toml", [machine])
        path.write_text(path.read_text() + api_table(max_upload_mb)
                        + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')  # fmt: skip
        agent = Agent(load_config(path)).start()
        agents.append(agent)
        agent.access.directory.apply_snapshot(snapshot(), "test")
        assert agent.machines["printer-1"].wait_ready(15)
        return agent, TestClient(create_app(agent))

    yield make
    for agent in agents:
        agent.stop()


def key(role: str) -> dict[str, str]:
    return {"X-Api-Key": KEYS[role]}


def gcode(tmp_path, segments=200, name="part.gcode") -> tuple[str, bytes, str]:
    path = circle_gcode(tmp_path / name, segments, min(0.3, 150 / segments), centre=(110, 110))
    return (name, path.read_bytes(), "application/octet-stream")


def test_roles(api_printer):
    agent, c = api_printer()
    assert c.get("/v1/machines").status_code == 401  # the test client is not on loopback: no kiosk role
    assert c.get("/v1/machines", headers={"X-Api-Key": "nope"}).status_code == 403
    assert c.get("/v1/machines", headers=key("slicer")).status_code == 200
    assert c.get("/v1/machines", headers={"Authorization": "Bearer " + KEYS["manager"]}).status_code == 200
    assert c.get("/v1/usage", headers=key("slicer")).status_code == 403
    assert c.get("/v1/usage", headers=key("booking")).status_code == 200
    assert c.post("/v1/machines/printer-1/lock", json={}, headers=key("booking")).status_code == 403
    assert c.post("/v1/machines/printer-1/pause", headers=key("slicer")).status_code == 403
    r = c.post("/v1/machines/printer-1/lock", json={"reason": "belt"}, headers=key("manager"))
    assert r.status_code == 200 and agent.ledger.machine("printer-1")["locked"] == 1
    audit = agent.ledger.audit_log("printer-1")
    assert audit[0]["actor"] == "manager-max" and audit[0]["action"] == "lock"
    # the state's rule (afn_agent/actions.py) on the REST route too: refused with its code, audited
    again = c.post("/v1/machines/printer-1/lock", json={"reason": "belt"}, headers=key("manager"))
    assert again.status_code == 409 and again.json()["code"] == "already_locked"
    assert c.post("/v1/machines/printer-1/unlock", headers=key("manager")).status_code == 200
    assert c.post("/v1/machines/printer-1/unlock", headers=key("manager")).json()["code"] == "not_locked"
    codes = [json.loads(r["detail_json"]).get("code") for r in agent.ledger.audit_log("printer-1")]
    assert codes[:3] == ["not_locked", None, "already_locked"]  # newest first: the unlock between them


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("part.stl", b"solid x\nendsolid\n", 415, "not a G-code file"),
        ("part.gcode", b"G28\n\x00\x01binary", 415, "binary content"),
        ("part.gcode", b"", 400, "empty"),
        ("part.gcode", b"G28\nM502\nM500\nG1 X10 Y10\n", 422, "M502"),
        ("part.gcode", b"G28\nG1 X900 Y10 F3000\n", 422, "X goes from"),
    ],
)
def test_hostile_uploads_are_refused_with_a_reason(api_printer, name, body, status, message):
    agent, c = api_printer()
    r = c.post("/v1/jobs", headers=key("slicer"), data={"machine": "printer-1"}, files={"file": (name, body)})
    assert r.status_code == status and message in r.json()["error"]
    assert agent.ledger.jobs() == []
    assert not agent.config.spool_dir.exists() or not any(agent.config.spool_dir.iterdir()), (
        "nothing left behind"
    )


def test_upload_size_limit_and_path_traversal(api_printer, tmp_path):
    agent, c = api_printer(max_upload_mb=0.05)
    big = b"G1 X10 Y10 E0.1\n" * 10_000  # 160 kB
    r = c.post(
        "/v1/jobs", headers=key("slicer"), data={"machine": "printer-1"}, files={"file": ("big.gcode", big)}
    )
    assert r.status_code == 413
    _name, body, ctype = gcode(tmp_path)
    r = c.post("/v1/jobs", headers=key("slicer"), data={"machine": "printer-1"},
               files={"file": ("../../../etc/cron.d/evil.gcode", body, ctype)})  # fmt: skip
    assert r.status_code == 201 and r.json()["name"] == "evil.gcode"
    stored = list(agent.config.spool_dir.iterdir())
    assert len(stored) == 1 and stored[0].parent == agent.config.spool_dir


def test_held_upload_flow_to_usage_pull_and_ack(api_printer, tmp_path):
    agent, c = api_printer()
    r = c.post("/api/files/local", headers=key("ana-slicer"), data={"print": "true", "path": ""},
               files={"file": gcode(tmp_path)})  # fmt: skip
    assert r.status_code == 201
    body = r.json()
    job_id = body["files"]["local"]["afn"]["job_id"]
    assert body["effectivePrint"] is False and agent.ledger.job(job_id)["state"] == "held"
    assert r.headers["location"].endswith(f"/api/files/local/{job_id}")
    assert float(body["files"]["local"]["afn"]["quote"]["price"]) >= 0.5  # the tariff's minimum
    time.sleep(0.6)  # real time: dispatch passes that must not start it
    assert agent.ledger.job(job_id)["state"] == "held", "nobody badged in"
    assert read_badge(agent, "ana")["action"] == "opened"
    assert agent.wait_idle("printer-1", 30)
    page = c.get("/v1/usage?after=0", headers=key("booking")).json()
    (rec,) = page["records"]
    assert rec["member_id"] == "ana" and rec["job"]["id"] == job_id and rec["job"]["source"] == "upload"
    assert c.get(f"/v1/usage?after={page['next']}", headers=key("booking")).json()["records"] == []
    r = c.post("/v1/usage/ack", headers=key("booking"), json={"record_id": [rec["record_id"], "bogus"]})
    assert r.json() == {"acknowledged": [rec["record_id"]], "unknown": ["bogus"]}
    assert agent.ledger.undelivered() == 0


def test_queue_list_move_delete(api_printer, tmp_path):
    agent, c = api_printer()
    ids = []
    for n in range(3):
        r = c.post("/v1/jobs", headers=key("manager"), data={"machine": "printer-1", "member": "ana"},
                   files={"file": gcode(tmp_path, name=f"p{n}.gcode")})  # fmt: skip
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert [j["id"] for j in c.get("/v1/jobs?state=held", headers=key("manager")).json()] == ids
    r = c.post(f"/v1/jobs/{ids[2]}/move", headers=key("manager"), json={"position": 1})
    assert r.status_code == 200
    assert [j["id"] for j in c.get("/v1/jobs?state=held", headers=key("manager")).json()] == [
        ids[2],
        ids[0],
        ids[1],
    ]
    assert c.post(f"/v1/jobs/{ids[0]}/move", headers=key("manager"), json={"position": 0}).status_code == 422
    assert c.delete(f"/v1/jobs/{ids[1]}", headers=key("slicer")).status_code == 403
    assert c.delete(f"/v1/jobs/{ids[1]}", headers=key("manager")).status_code == 204
    assert agent.ledger.job(ids[1])["state"] == "cancelled" and agent.ledger.usage_after() == []
    assert c.get("/v1/jobs/nope", headers=key("manager")).status_code == 404
    quote = c.get(f"/v1/jobs/{ids[0]}/quote", headers=key("slicer")).json()
    assert quote["time_s"] > 0 and quote["quote"]["currency"] == "EUR"


def test_start_and_control_need_the_owner_or_a_manager(api_printer, tmp_path):
    agent, c = api_printer()
    r = c.post("/v1/jobs", headers=key("ana-slicer"), data={"machine": "printer-1"},
               files={"file": gcode(tmp_path, segments=4000)})  # fmt: skip
    job_id = r.json()["id"]
    assert c.post(f"/v1/jobs/{job_id}/start", headers=key("slicer")).status_code == 403
    assert c.post(f"/v1/jobs/{job_id}/start", headers=key("manager")).status_code == 200
    wait_for(lambda: agent.machines["printer-1"].state == "printing", 10, "the job printing")
    assert c.post("/v1/machines/printer-1/pause", headers=key("manager")).status_code == 200
    wait_for(lambda: agent.machines["printer-1"].state == "paused", 5, "the job paused")
    assert c.post("/v1/machines/printer-1/pause", headers=key("manager")).status_code == 409
    assert c.post("/v1/machines/printer-1/cancel", headers=key("manager")).status_code == 200
    assert agent.wait_idle("printer-1", 30)
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["stop_type"] == "admin" and rec["price"] == "0.00"  # tariff: admin cancels are free


def test_directory_push_by_the_booking_system(api_printer):
    agent, c = api_printer()
    snap = snapshot(version=5)
    snap["members"] = [m for m in snap["members"] if m["id"] != "ana"]
    assert c.post("/v1/directory", headers=key("booking"), json={"snapshot": snap}).json() == {"version": 5}
    assert read_badge(agent, "ana")["result"] == "unknown_badge"
    bad = c.post(
        "/v1/directory", headers=key("booking"), json={"snapshot": {"version": 6, "members": [{"id": ""}]}}
    )
    assert bad.status_code == 422 and "members[0].id" in bad.json()["error"]
    assert c.post("/v1/directory", headers=key("slicer"), json={"snapshot": snap}).status_code == 403
    assert UIDS  # the same directory as the access tests


def test_one_error_family_each_refusal_with_its_own_reason_code(api_printer, tmp_path, monkeypatch):
    """An illegal job transition used to be reported as `job_overruns_booking` (any ValueError was)."""
    from afn_agent import control
    from afn_agent.ledger.states import IllegalTransition

    BookingOverrun = getattr(control, "BookingOverrun", ValueError)  # (what the code before raised)

    agent, c = api_printer()
    name, body, ctype = gcode(tmp_path)
    job = c.post(
        "/v1/jobs", headers=key("manager"), data={"machine": "printer-1"}, files={"file": (name, body, ctype)}
    )
    job_id = job.json()["id"]
    agent.control.lock("printer-1", "manager-max", "keep the job held")
    for raised, code in ((IllegalTransition("job x: held -> starting is not allowed"), "illegal-transition"),
                         (BookingOverrun("free for 14 min, the job needs 30"), "job_overruns_booking")):  # fmt: skip

        def release(*args, exc=raised, **kw):
            raise exc

        monkeypatch.setattr(agent.control, "release_job", release)
        for path in (f"/v1/jobs/{job_id}/start", "/octoprint/printer-1/api/job"):
            r = c.post(path, headers=key("manager"), json={"command": "start"})
            assert r.status_code == 409 and r.json()["code"] == code, (path, r.json())
            assert r.json()["error"] == str(raised)
    r = c.post(
        "/v1/jobs",
        headers=key("slicer"),
        data={"machine": "printer-1"},
        files={"file": ("x.gcode", b"G28\nM502\n")},
    )
    assert r.status_code == 422 and r.json()["code"] == "job-refused"
    assert c.get("/v1/jobs/nope", headers=key("manager")).json()["code"] == "not-found"


def test_sim_badge_holds_a_card_to_the_simulated_reader(api_printer):
    """`afn-agent badge` and the demo's visitors: a manager's key only, audited without the card's UID."""
    agent, c = api_printer()
    url = "/v1/machines/printer-1/sim-badge"
    assert c.post(url, json={"uid": UIDS["ana"]}, headers=key("slicer")).status_code == 403
    assert c.post(url, json={"uid": "zz-not-hex"}, headers=key("manager")).status_code == 422
    assert c.post("/v1/machines/nope/sim-badge", json={"uid": UIDS["ana"]}, headers=key("manager")).status_code == 404
    r = c.post(url, json={"uid": UIDS["ana"].lower()}, headers=key("manager"))
    assert r.status_code == 200 and r.json() == {"result": "presented"}
    session = wait_for(lambda: agent.access.sessions.current("printer-1"), 5, "ana's session")
    assert session["member_id"] == "ana"
    rows = agent.ledger.audit_log("printer-1", 50)
    sim = [r for r in rows if r["action"] == "sim-badge"]
    assert sim and sim[0]["actor"] == "manager-max" and sim[0]["result"] == "presented"
    assert all(UIDS["ana"].lower() not in str(row).lower() for row in rows)


def test_sim_badge_refused_where_the_reader_is_real(api_printer):
    agent, c = api_printer(reader=None, hold_uploads=False)  # no simulated reader at this machine
    r = c.post("/v1/machines/printer-1/sim-badge", json={"uid": UIDS["ana"]}, headers=key("manager"))
    assert r.status_code == 409 and r.json()["code"] == "no-sim-reader"
    assert agent.ledger.audit_log("printer-1", 5)[0]["result"] == "refused"
