"""Issue 15, class 8: uploads were never deleted, so any slicer key could fill the disk; then uploads and
a manager's DELETE gave 500, the badge reader thread died on an audit write and a later badge-out was
ignored. Played on a real 24 MB filesystem (tmpfs) holding the agent's ledger and spool."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_access import SECRET, UIDS, snapshot

SLICER = {"X-Api-Key": KEYS["slicer"]}
MANAGER = {"X-Api-Key": KEYS["manager"]}


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB filesystem at tmp_path/data (the agent's data_dir)."""
    data = tmp_path / "data"
    data.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(data)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small filesystem in CI: {done.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    yield data
    subprocess.run(["umount", "-l", str(data)], check=False)


def fill(path, leave: int = 0) -> None:
    """Write until the filesystem is full (less `leave` bytes)."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    if leave:
        os.truncate(path, max(os.path.getsize(path) - leave, 0))


def uploads_in(spool) -> list[str]:
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


def test_quotas_spool_cleanup_and_a_full_disk_keep_every_thread_and_session_sound(
    small_disk, tmp_path, start_sim
):
    sim = start_sim("marlin", speed=10)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "reader": "sim"}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    text = path.read_text().replace(
        "checkpoint_s = 1.0", "checkpoint_s = 1.0\nmin_free_mb = 1\nspool_quota_mb = 12"
    )
    path.write_text(
        text
        + api_table(extra="key_quota_mb = 1.5")
        + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n'
    )
    agent = Agent(load_config(path)).start()
    url = f"http://127.0.0.1:{agent.api.port}"
    spool = agent.config.spool_dir
    try:
        agent.access.directory.apply_snapshot(snapshot(), "test")
        assert agent.machines["printer-1"].wait_ready(15)
        part = circle_gcode(tmp_path / "part.gcode", 20_000, 0.01, centre=(110, 110)).read_bytes()  # ~0.7 MB

        def upload(headers, name="part.gcode"):
            return requests.post(
                f"{url}/v1/jobs", headers=headers, data={"machine": "printer-1"}, files={"file": (name, part)}
            )

        # a key's quota: the third file of the shared slicer key does not fit its 1.5 MB
        first, second = upload(SLICER), upload(SLICER)
        assert first.status_code == second.status_code == 201
        third = upload(SLICER)
        assert third.status_code == 507 and "slicers's job files take" in third.json()["error"], third.text
        assert upload(MANAGER).status_code == 201, "another key has its own quota"
        # a job's file leaves the spool as the job ends
        held = first.json()["id"]
        assert requests.post(f"{url}/v1/jobs/{second.json()['id']}/start", headers=MANAGER).status_code == 200
        wait_for(lambda: agent.ledger.job(second.json()["id"])["state"] == "completed", 60, "a job ran")
        assert not os.path.exists(agent.ledger.job(second.json()["id"])["path"])
        assert agent.ledger.job(second.json()["id"])["file_removed_at"]

        # something else fills the disk
        filler = small_disk / "filler"
        fill(filler)
        r = upload(MANAGER, "late.gcode")
        assert r.status_code == 507, r.text
        assert not [n for n in uploads_in(spool) if n.endswith(".upload")], "nothing half-written is left"
        # a badge read while the ledger cannot be written: the reader thread lives on
        loop = agent.access.readers["printer-1"]
        agent.access.sim_reader("printer-1").present(UIDS["ana"])
        wait_for(lambda: loop.failures >= 1, 5, "the badge read failed")
        assert loop._thread.is_alive() and agent.access.sessions.current("printer-1") is None
        # a manager's DELETE frees the job's file first, then records the removal
        r = requests.delete(f"{url}/v1/jobs/{held}", headers=MANAGER)
        assert r.status_code == 204, r.text
        assert agent.ledger.job(held)["state"] == "cancelled" and not os.path.exists(
            agent.ledger.job(held)["path"]
        )
        # the disk is given back: badge in and badge out work, sessions stay consistent
        filler.unlink()
        time.sleep(0.3)  # real time: the reader debounce of the last read passes
        agent.access.sim_reader("printer-1").present(UIDS["ana"])
        wait_for(lambda: agent.access.sessions.current("printer-1") is not None, 5, "ana's session")
        time.sleep(0.4)  # real time: past the reader debounce, the same card is a new read
        agent.access.sim_reader("printer-1").present(UIDS["ana"])
        wait_for(lambda: agent.access.sessions.current("printer-1") is None, 5, "ana's badge-out")
        assert requests.get(f"{url}/health", timeout=5).json()["ok"]
    finally:
        agent.stop()


def test_a_disk_that_fills_during_a_job_loses_no_record(small_disk, tmp_path, start_sim):
    sim = start_sim("marlin", speed=10)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    path.write_text(path.read_text().replace("checkpoint_s = 1.0", "checkpoint_s = 1.0\nmin_free_mb = 1"))
    agent = Agent(load_config(path)).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        from afn_agent.intake import submit

        job_id, _ = submit(agent.config, agent.ledger, "printer-1",
                           circle_gcode(tmp_path / "j.gcode", 1500, 0.1, centre=(110, 110)), "cli")  # fmt: skip
        wait_for(lambda: agent.control.running_job("printer-1") is not None, 15, "running")
        filler = small_disk / "filler"
        fill(filler)
        wait_for(lambda: agent.ledger_error, 15, "the ledger cannot be written, and the agent says so")
        wait_for(lambda: agent.machines["printer-1"].state == "idle", 60, "the machine finished")
        assert agent.ledger.job(job_id)["state"] != "completed", "not billed from memory"
        filler.unlink()
        wait_for(lambda: agent.ledger.job(job_id)["state"] == "completed", 15, "recorded once there is room")
        assert len(agent.ledger.usage_after()) == 1 and not agent.ledger_error
        assert agent.pump.is_alive()
    finally:
        agent.stop()
