"""Cameras: an MJPEG stream served by ffmpeg from its `testsrc` on loopback stands in for a webcam (the
agent grabs V4L2 devices through the same ffmpeg path, tried where /dev/video* exists). Pictures at a
job's start, at a fault and at its end land beside the ledger with the hashes the ledger and the events
say; one on demand through the API; the retention limit removes the oldest files and keeps their rows;
a dead or silent camera never delays a job."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from afn_agent.intake import submit
from afn_agent.ledger.snapshots import Snapshots
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for

FFMPEG = shutil.which("ffmpeg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegCamera:
    """ffmpeg serving its test pattern as an MJPEG stream over HTTP; ffmpeg's server takes one client at
    a time, so it is started again after each (mjpg-streamer and OctoPrint's webcam take many)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.running = True
        self.clients = 0
        self.proc: subprocess.Popen | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            self.proc = subprocess.Popen(
                [FFMPEG, "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=10",
                 "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", self.url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.proc.wait()
            self.clients += 1

    def close(self) -> None:
        self.running = False
        if self.proc is not None:
            self.proc.kill()
        self.thread.join(5)


@pytest.fixture
def camera():
    if FFMPEG is None:
        pytest.fail("ffmpeg is not installed (deploy/dev-setup.sh installs it)")
    cam = MjpegCamera()
    yield cam
    cam.close()


def pictures(agent, job_id: str) -> list[dict]:
    return Snapshots(agent.ledger).of_job(job_id)


def test_pictures_at_start_fault_and_end_with_their_hashes(one_machine, camera, tmp_path):
    agent, _sim = one_machine("printer-1", thermal_runaway_at=400,
                              extra_machine={"camera": {"url": camera.url, "timeout_s": 8}})  # fmt: skip
    path = circle_gcode(tmp_path / "job.gcode", 3000, heat=None, centre=(110, 110))
    job_id, _ = submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
    wait_for(lambda: {p["moment"] for p in pictures(agent, job_id)} >= {"start", "fault", "end"}, 40,
             "pictures at the job's start, its fault and its end")  # fmt: skip
    assert agent.ledger.job(job_id)["state"] == "failed"
    rows = pictures(agent, job_id)
    events = [json.loads(r["payload"]) for r in agent.ledger.conn.execute(
        "SELECT payload FROM outbox WHERE kind='event'")]  # fmt: skip
    said = {e["snapshot_id"]: e for e in events if e["type"] == "snapshot"}
    for row in rows:
        picture = Path(row["path"])
        assert picture.parent == agent.config.data_dir / "snapshots" / "printer-1"
        assert picture.read_bytes()[:2] == b"\xff\xd8", "a JPEG"
        assert hashlib.sha256(picture.read_bytes()).hexdigest() == row["sha256"] == said[row["id"]]["sha256"]
        assert said[row["id"]]["job_id"] == job_id and said[row["id"]]["moment"] == row["moment"]
    # the member's summary at the machine shows the camera's picture of the job's end
    from afn_agent.api.kiosk_view import _summary

    end = next(r for r in rows if r["moment"] == "end")
    assert _summary(agent, "printer-1", None, "en")["picture"] == f"/v1/snapshots/{end['id']}"


def test_api_demand_retention_and_who_sees_a_picture(tmp_path, start_sim, camera):
    from fastapi.testclient import TestClient

    from afn_agent.agent import Agent
    from afn_agent.api.server import create_app
    from afn_agent.config import load_config
    from tests.helpers import KEYS, api_table, write_config

    sim = start_sim("marlin", speed=10)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False,
               "camera": {"url": camera.url, "keep_mb": 0.05, "on": ["start", "end"]}}  # fmt: skip
    config = write_config(tmp_path / "agent.toml", [machine])
    config.write_text(config.read_text() + api_table(50.0))
    agent = Agent(load_config(config)).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        client = TestClient(create_app(agent))
        manager, slicer = {"X-Api-Key": KEYS["manager"]}, {"X-Api-Key": KEYS["slicer"]}
        assert client.post("/v1/machines/printer-1/snapshot", headers=slicer).status_code == 403
        for _ in range(3):
            assert client.post("/v1/machines/printer-1/snapshot", headers=manager).status_code == 202
            wait_for(lambda n=_: len(Snapshots(agent.ledger).kept("printer-1")) + _removed(agent) > n, 20,
                     "the picture on demand")  # fmt: skip
        rows = agent.ledger.conn.execute("SELECT * FROM snapshots ORDER BY id").fetchall()
        assert len(rows) == 3 and all(r["moment"] == "demand" and r["actor"] == "manager-max" for r in rows)
        kept = Snapshots(agent.ledger).kept("printer-1")
        assert sum(r["bytes"] for r in kept) <= 50_000 and _removed(agent) >= 1, "the size limit holds"
        gone = next(r for r in rows if r["removed_at"] is not None)
        assert not Path(gone["path"]).exists() and gone["sha256"]  # the file goes, its hash stays
        latest = kept[0]
        jpeg = client.get(f"/v1/snapshots/{latest['id']}", headers=manager)
        assert jpeg.status_code == 200 and hashlib.sha256(jpeg.content).hexdigest() == latest["sha256"]
        assert client.get(f"/v1/snapshots/{latest['id']}", headers=slicer).status_code == 404  # no job: managers
        assert client.get(f"/v1/snapshots/{gone['id']}", headers=manager).status_code == 410
        assert client.get("/v1/snapshots/9223372036854775808", headers=manager).status_code == 422  # past SQLite
        audit = [r for r in agent.ledger.audit_log("printer-1") if r["action"] == "api:snapshot"]
        assert {r["result"] for r in audit} == {"queued", "refused"} or {r["result"] for r in audit} == {"queued"}
    finally:
        agent.stop()


def _removed(agent) -> int:
    return agent.ledger.conn.execute("SELECT COUNT(*) FROM snapshots WHERE removed_at IS NOT NULL").fetchone()[0]


def silent_server() -> tuple[socket.socket, str]:
    """A camera that takes the connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"


@pytest.mark.parametrize("dead", ["refused", "silent"])
def test_a_dead_camera_never_delays_a_job(one_machine, tmp_path, dead):
    server, url = silent_server()
    if dead == "refused":
        server.close()
    try:
        agent, _sim = one_machine("printer-1", extra_machine={"camera": {"url": url, "timeout_s": 2}})
        path = circle_gcode(tmp_path / "job.gcode", 600, heat=None, centre=(110, 110))
        t0 = time.monotonic()
        job_id, _ = submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
        assert agent.wait_idle("printer-1", 30)
        took = time.monotonic() - t0
        assert agent.ledger.job(job_id)["state"] == "completed"
        assert took < 5, f"the job took {took:.1f} s beside a {dead} camera"
        camera = agent.cameras.cameras["printer-1"]
        wait_for(lambda: camera.failures >= 1, 20, "the camera's failure noted")
        assert pictures(agent, job_id) == []
    finally:
        server.close()


@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="no V4L2 device on this machine")
def test_a_v4l2_device_through_the_same_path(tmp_path):  # pragma: no cover - hardware only
    from afn_agent.camera import Camera, CameraSettings
    from afn_agent.ledger import Ledger

    ledger = Ledger(tmp_path / "l.sqlite3", "lab")
    taken = []
    cam = Camera("m", CameraSettings(device=sorted(glob.glob("/dev/video*"))[0]), tmp_path / "pics",
                 Snapshots(ledger), lambda row, thumb: taken.append(row), FFMPEG or "ffmpeg")  # fmt: skip
    cam.directory.mkdir()
    assert cam.capture("demand", None, "test") is not None and taken


def test_pictures_reach_the_fleet_tile_and_history_through_the_deploy_acl(tmp_path, start_sim, broker, camera):
    """The agent as user pi-printers under the shipped ACL, the dashboard as user fleet: the thumbnail is
    the tile's picture, and the job's pictures are in its history with the agent's hashes."""
    import hashlib as h

    from afn_agent.agent import Agent
    from afn_agent.config import BrokerConfig, load_config
    from afn_agent.fleet.service import Fleet, FleetConfig
    from tests.broker import password
    from tests.helpers import write_config

    sim = start_sim("marlin", speed=10)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False,
               "camera": {"url": camera.url, "on": ["start", "end"]}}  # fmt: skip
    bus = {"host": "127.0.0.1", "port": broker.port, "username": "pi-printers", "password": password("pi-printers"),
           "keepalive_s": 5}  # fmt: skip
    agent = Agent(load_config(write_config(tmp_path / "agent.toml", [machine], broker=bus))).start()
    cfg = BrokerConfig(host="127.0.0.1", port=broker.port, keepalive_s=5, username=broker.user_for("fleet", None),
                       password=password("fleet"))  # fmt: skip
    fleet = Fleet(FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, None,
                              {"max": h.sha256(b"max-key").hexdigest()}, cfg, tmp_path / "fleet")).start()  # fmt: skip
    try:
        assert agent.machines["printer-1"].wait_ready(15) and fleet.connected.wait(10)
        wait_for(lambda: "printer-1" in fleet.state.machines, 10, "printer-1's status at the dashboard")
        path = circle_gcode(tmp_path / "job.gcode", 300, heat=None, centre=(110, 110))
        job_id, _ = submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
        assert agent.wait_idle("printer-1", 30)
        wait_for(lambda: len(pictures(agent, job_id)) == 2, 30, "the start and end pictures")
        assert fleet.history is not None
        wait_for(lambda: len(fleet.history.pictures_of(job_id)) == 2, 15, "the pictures at the dashboard")
        assert {p["sha256"] for p in fleet.history.pictures_of(job_id)} == {r["sha256"] for r in pictures(agent, job_id)}
        jpeg, facts = fleet.state.picture("printer-1") or (b"", {})
        assert jpeg[:2] == b"\xff\xd8" and facts["job_id"] == job_id and facts["moment"] == "end"
    finally:
        fleet.stop()
        agent.stop()


def test_a_timelapse_of_the_job_is_assembled_at_its_end(one_machine, camera, tmp_path):
    agent, _sim = one_machine("printer-1", speed=2, move_ms=2.0,
                              extra_machine={"camera": {"url": camera.url, "on": ["end"], "timelapse_s": 2}})  # fmt: skip
    path = circle_gcode(tmp_path / "job.gcode", 2500, heat=None, centre=(110, 110))
    t0 = time.monotonic()
    job_id, _ = submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
    assert agent.wait_idle("printer-1", 60)
    ran = time.monotonic() - t0
    wait_for(lambda: any(p["moment"] == "timelapse" for p in pictures(agent, job_id)), 90, "the timelapse")
    (video,) = [p for p in pictures(agent, job_id) if p["moment"] == "timelapse"]
    data = Path(video["path"]).read_bytes()
    assert data[4:8] == b"ftyp" and hashlib.sha256(data).hexdigest() == video["sha256"], "an MP4, hashed"
    assert {p["moment"] for p in pictures(agent, job_id)} == {"end", "timelapse"}  # `on` says which pictures
    assert not list(Path(video["path"]).parent.glob(".timelapse-*")), "the frames go once the video is made"
    assert ran > 4, f"the job ran {ran:.1f} s: too short for frames 2 s apart"
