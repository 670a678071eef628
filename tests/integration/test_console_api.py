"""Issue 18: every console action goes through the same API and the same Gate, is refused with a reason
outside a session, by another member or in the wrong machine state, and is audited — per action,
through the real HTTP server, against a simulated GRBL mill."""

from __future__ import annotations

import json

import httpx
import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.machine.console import ConsoleAction, Do
from afn_agent.machine.events import MachineState
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_access import SECRET, day, read_badge, snapshot

MILL = {"trainings": [{"class": "cnc-mill", "expires": day(365)}]}
BODIES = {Do.JOG: {"axes": {"X": -1}}, Do.ZERO: {"axes": {"X": 0, "Y": 0}}, Do.BABYSTEP: {"z": 0.05}}


@pytest.fixture
def mill(tmp_path, start_sim):
    sim = start_sim("grbl", plate=True, plate_z=-60.0, homing_lock=True)  # it homes: travel is known
    machines = [{"id": "mill-1", "class": "cnc-mill", "profile": "grbl-1.1", "port": str(sim.link),
                 "baud": sim.options["baud"], "reader": "sim", "hold_uploads": True,
                 "console": {"plate_mm": 12.5, "probe_depth": 80, "jog_feed": 3000}}]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(ana=MILL, bob=MILL), "test")
    mill = agent.machines["mill-1"]
    wait_for(lambda: mill.state == MachineState.ALARM, 15, "GRBL locked until it homes ($22=1)")
    mill.console(ConsoleAction(Do.HOME, "test")).result(5)
    wait_for(lambda: mill.state == MachineState.IDLE and mill.grbl_state == "Idle", 15, "homed")
    yield agent, f"http://127.0.0.1:{agent.api.port}", sim
    agent.stop()


def post(url: str, action: Do | str, body=None, key: str | None = None) -> httpx.Response:
    headers = {"X-Api-Key": key} if key else {}
    return httpx.post(f"{url}/v1/machines/mill-1/console/{action}", json=body, headers=headers, timeout=10)


def audit(agent, action: str) -> list[dict]:
    return [r for r in agent.ledger.audit_log("mill-1", 2000) if r["action"] == f"api:console:{action}"]


def upload(url: str, path, key: str) -> str:
    return upload_to(url, path, key, "mill-1")


def upload_to(url: str, path, key: str, machine: str) -> str:
    r = httpx.post(f"{url}/v1/jobs", files={"file": (path.name, path.read_bytes())}, data={"machine": machine},
                   headers={"X-Api-Key": key}, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["id"]


def session_token(url: str) -> str:
    return httpx.get(f"{url}/v1/kiosk/mill-1").json()["token"]


@pytest.mark.parametrize("do", list(Do))
def test_every_action_is_refused_outside_a_session_and_audited(mill, do):
    agent, url, _ = mill
    r = post(url, do, BODIES.get(do))  # the kiosk, on this host, with nobody badged in
    assert r.status_code == 403 and "badge in at the machine first" in r.json()["detail"], r.text
    (row,) = audit(agent, do)
    assert row["result"] == "refused" and "badge in" in json.loads(row["detail_json"])["problem"]


def test_another_members_token_and_the_wrong_state_are_refused_per_action(mill, tmp_path):
    agent, url, _ = mill
    assert read_badge(agent, "ana", "mill-1")["action"] == "opened"
    session_id = agent.access.sessions.current("mill-1")["id"]
    bob = agent.api.auth.mint("mill-1", "bob", session_id)  # a token for bob on the session Ana holds
    for do in Do:
        r = post(url, do, BODIES.get(do), key=bob)
        assert r.status_code == 403 and "another member's session" in r.json()["detail"], (do, r.text)
        r = post(url, do, BODIES.get(do), key=KEYS["ana-slicer"])  # a member's slicer key is not a console
        assert r.status_code == 403 and "slicer role may not" in r.json()["detail"], (do, r.text)
    ana = session_token(url)
    wait_for(lambda: agent.machines["mill-1"].grbl_state == "Idle", 5, "idle")
    wrong = {Do.UNLOCK: "nothing-to-unlock", Do.CONTINUE: "not-waiting", Do.BABYSTEP: "babystep-no-print",
             Do.PREHEAT: "no-heaters", Do.LOAD: "no-extruder", Do.UNLOAD: "no-extruder",
             Do.FRAME: "nothing-to-frame"}  # fmt: skip
    for do, why in wrong.items():
        r = post(url, do, BODIES.get(do) or ({"hotend": 200, "bed": 60} if do is Do.PREHEAT else None), key=ana)
        said = r.json()
        assert r.status_code == 409 and said["reason"] == f"refused.{why}", (do, r.text)
        assert said["detail"] == said["words"]["en"] and said["words"]["fr"] != said["words"]["en"], r.text
        assert audit(agent, do)[0]["result"] == "refused"
    long_job = tmp_path / "long.nc"
    long_job.write_text("G21 G90\n" + "".join(f"G1 X{-(i % 50) - 1} F3000\n" for i in range(4000)))
    job_id = upload(url, long_job, ana)
    httpx.post(f"{url}/v1/jobs/{job_id}/start", headers={"X-Api-Key": ana})  # held: start (else it has)
    wait_for(lambda: agent.machines["mill-1"].state == MachineState.PRINTING, 15, "the job running")
    for do in (Do.JOG, Do.JOG_STOP, Do.ZERO, Do.GO_TO_ZERO, Do.PROBE, Do.RAISE_Z):
        r = post(url, do, BODIES.get(do), key=ana)
        said = r.json()
        assert r.status_code == 409 and said["reason"] == "refused.not-idle", (do, r.text)
        assert "(Fraisage)" in said["words"]["fr"] and "(Milling)" in said["words"]["en"], r.text
    assert httpx.post(f"{url}/v1/machines/mill-1/cancel", headers={"X-Api-Key": ana}).status_code == 200
    wait_for(lambda: agent.ledger.job(job_id)["state"] == "cancelled", 20, "cancelled")


def test_session_member_and_manager_drive_it_and_each_call_is_audited(mill):
    agent, url, sim = mill
    wait_for(lambda: agent.machines["mill-1"].grbl_state == "Idle", 5, "idle")
    r = post(url, Do.JOG, {"axes": {"X": -5}}, key=KEYS["manager"])  # a manager needs no session
    assert r.status_code == 200, r.text
    read_badge(agent, "ana", "mill-1")
    ana = session_token(url)
    wait_for(lambda: agent.machines["mill-1"].grbl_state == "Idle", 5, "idle")
    assert post(url, Do.ZERO, {"axes": {"X": 0}}, key=ana).status_code == 200
    wait_for(lambda: agent.machines["mill-1"].work_offset.get("X") == -5.0, 5, "WCO")
    status = httpx.get(f"{url}/v1/machines/mill-1", headers={"X-Api-Key": ana}).json()
    assert status["work_offset"]["X"] == -5.0 and status["prompt"] is None
    rows = audit(agent, "zero")
    assert rows[0]["actor"] == "session:ana" and rows[0]["result"] == "done"
    assert json.loads(rows[0]["detail_json"])["args"] == {"axes": {"X": 0.0}}
    assert audit(agent, "jog")[0]["actor"] == "manager-max"
    ran = [cmd.replace(" ", "") for label, cmd in sim.executed()]
    assert "$J=G91G21X-5F3000" in ran and "G10L20P1X0" in ran


@pytest.mark.parametrize("body", [
    {"axes": {"X": 1e9}}, {"axes": {"A": 1}}, {"axes": {}}, {"axes": {"X": 0}}, {"axes": "X1"},
    {"axes": {"X": -1}, "speed": 99999}, {"axes": {"X": -1, "Y": -1, "Z": -1, "Q": 1}},
])  # fmt: skip
def test_hostile_bodies_are_refused_with_the_field(mill, body):
    agent, url, sim = mill
    read_badge(agent, "ana", "mill-1")
    before = len(sim.executed())
    r = post(url, Do.JOG, body, key=session_token(url))
    assert r.status_code == 422 and r.json()["detail"].startswith(("body.", "axes")), r.text
    assert len(sim.executed()) == before
    assert audit(agent, "jog")[0]["result"] == "refused"  # hostile input is refused and audited
    assert post(url, "reboot", None, key=KEYS["manager"]).status_code == 404


def test_a_job_outside_the_travel_with_the_work_offset_is_refused_before_a_byte(mill, tmp_path):
    agent, url, sim = mill
    wait_for(lambda: agent.machines["mill-1"].grbl_state == "Idle", 5, "idle")
    assert post(url, Do.JOG, {"axes": {"X": -250, "Y": -100}}, key=KEYS["manager"]).status_code == 200
    wait_for(lambda: agent.machines["mill-1"].position.get("X") == -250.0, 10, "jogged")
    assert post(url, Do.ZERO, {"axes": {"X": 0, "Y": 0}}, key=KEYS["manager"]).status_code == 200
    wait_for(lambda: agent.machines["mill-1"].work_offset.get("X") == -250.0, 5, "WCO")
    read_badge(agent, "ana", "mill-1")
    ana = session_token(url)
    part = tmp_path / "wide.nc"
    part.write_text("G21 G90\nG0 X0 Y0\nG1 X80 Y20 F1000\nG1 X0 Y0\n")  # X -250 … -170: inside
    wide = tmp_path / "too-wide.nc"
    wide.write_text("G21 G90\nG0 X0 Y0\nG1 X280 Y20 F1000\nG1 X0 Y0\n")  # reaches X +30: beyond 0
    before = len(sim.executed())
    job_id = upload(url, wide, ana)  # Ana is in session: it is queued at once, and the pump holds it back
    why = "The job takes X to 30 mm (machine coordinates), 30 mm beyond its travel (-300 to 0 mm)."
    held = wait_for(lambda: [r for r in agent.ledger.audit_log("mill-1", 50)
                             if r["action"] == "job-hold" and r["subject"] == job_id], 10, "held back")  # fmt: skip
    assert why in json.loads(held[0]["detail_json"])["reason"]
    r = httpx.post(f"{url}/v1/jobs/{job_id}/start", headers={"X-Api-Key": ana})  # Start, pressed again
    assert r.status_code == 409 and r.json()["code"] == "outside-travel" and why in r.json()["detail"], r.text
    assert r.json()["words"]["fr"] == ("Le travail amène l'axe X à 30 mm (coordonnées machine), 30 mm au-delà "
                                       "de sa course (de -300 à 0 mm). Déplacez le zéro pièce, puis lancez-le.")
    assert len(sim.executed()) == before, "not a byte of it reached the machine"
    assert agent.ledger.job(job_id)["state"] == "held"
    fits = upload(url, part, ana)
    wait_for(lambda: agent.ledger.job(fits)["state"] == "completed", 30, "the job that fits runs")


def test_babysteps_need_the_training_the_machine_names(tmp_path, start_sim):
    sim = start_sim("marlin", babystep=True, speed=10)
    machines = [{"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                 "baud": sim.options["baud"], "reader": "sim", "start_on_badge": True,
                 "console": {"babystep_training": "fdm-advanced"}}]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')
    agent = Agent(load_config(path)).start()
    try:
        agent.access.directory.apply_snapshot(snapshot(), "test")  # Ana: fdm-printer only; Tom: a trainer
        assert agent.machines["printer-1"].wait_ready(15)
        url = f"http://127.0.0.1:{agent.api.port}"
        job = tmp_path / "long.gcode"
        job.write_text("".join(f"G1 X{10 + i % 50} Y10 F600\n" for i in range(6000)))
        for who, ok in (("ana", False), ("tom", True)):
            read_badge(agent, who)
            token = httpx.get(f"{url}/v1/kiosk/printer-1").json()["token"]
            upload_to(url, job, token, "printer-1")
            wait_for(lambda: agent.machines["printer-1"].state == MachineState.PRINTING, 15, "printing")
            r = httpx.post(f"{url}/v1/machines/printer-1/console/babystep", json={"z": 0.02},
                           headers={"X-Api-Key": token})  # fmt: skip
            if ok:
                assert r.status_code == 200, r.text
            else:
                assert r.status_code == 409 and r.json()["reason"] == "refused.babystep-training", r.text
                assert "fdm-advanced" in r.json()["words"]["fr"], r.text
            httpx.post(f"{url}/v1/machines/printer-1/cancel", headers={"X-Api-Key": token})
            wait_for(lambda: agent.machines["printer-1"].state == MachineState.IDLE, 20, "cancelled")
            read_badge(agent, who)  # badge out
        assert "M290 Z0.02" in [c for _, c in sim.executed()]
    finally:
        agent.stop()
