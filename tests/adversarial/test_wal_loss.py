"""Issue 15, class 5: the last writes of the ledger lost after a record went out. The disk gives back
the ledger as it was mid-job (a lost WAL tail); the agent closes that job again, as interrupted. It
used to bill it under a new record id, so the booking system held two bills for one job. Now the id is
derived from the job: the booking system, keyed by record id, holds one record per job, the first."""

from __future__ import annotations

import json
import sqlite3
import time

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from tests.faults.test_delivery_faults import Booking, config, small
from tests.helpers import wait_for


def snapshot_ledger(path, to) -> None:
    """The ledger as of now, consistent (SQLite's backup): what a disk that loses later writes returns."""
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


def test_a_lost_wal_tail_after_delivery_never_makes_a_second_bill(tmp_path, broker, start_sim):
    sim = start_sim("marlin", speed=10)
    cfg = load_config(config(tmp_path, broker, sim))
    booking = Booking(broker)
    stored: dict[str, dict] = {}  # the booking system's table: the first version of each record id

    def store(msg):
        record = json.loads(msg.payload)
        stored.setdefault(record["record_id"], record)
        booking.client.client.publish(
            msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1
        )

    booking.client.on_message = store
    agent = Agent(cfg).start()
    jobs = []
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "the broker")
        for n in range(3):
            jobs.append(submit(cfg, agent.ledger, "printer-1", small(tmp_path, n, 1500), "cli")[0])
            wait_for(lambda: agent.control.running_job("printer-1") is not None, 15, "running")
            if n == 2:
                time.sleep(1.5)  # real time: a checkpoint or two
                snapshot_ledger(cfg.ledger_path, tmp_path / "mid-job.sqlite3")
            assert agent.wait_idle("printer-1", 90)
        wait_for(lambda: agent.ledger.undelivered() == 0 and len(stored) == 3, 30, "three records stored")
    finally:
        agent.stop()
    # the disk returns the ledger as it was during the third job
    for suffix in ("", "-wal", "-shm"):
        cfg.ledger_path.with_name(cfg.ledger_path.name + suffix).unlink(missing_ok=True)
    (tmp_path / "mid-job.sqlite3").rename(cfg.ledger_path)
    again = Agent(cfg).start()
    try:
        assert again.ledger.job(jobs[2])["state"] == "interrupted", "closed again from its checkpoint"
        wait_for(lambda: again.ledger.undelivered() == 0, 30, "the repeat acknowledged")
    finally:
        again.stop()
        booking.client.close()
    per_job: dict[str, set[str]] = {}
    for _, payload, _ in booking.client.received("usage"):
        record = json.loads(payload)
        per_job.setdefault(record["job"]["id"], set()).add(record["record_id"])
    assert sorted(per_job) == sorted(jobs)
    assert all(len(ids) == 1 for ids in per_job.values()), per_job  # one bill per job, whatever was lost
    assert len(stored) == 3 and stored[next(iter(per_job[jobs[2]]))]["job"]["outcome"] == "completed"
