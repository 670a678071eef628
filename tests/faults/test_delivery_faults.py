"""Faults between the agent and the booking system: broker partition mid-job, booking system down,
kill -9 of the agent at random points (20 times), hostile MQTT payloads and badge floods."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from afn_agent.agent import Agent, open_ledger
from afn_agent.bus.tokens import sign
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.broker import Client, password
from tests.helpers import wait_for, write_config

SECRET = "manager-signing-secret-0123456789"


def config(tmp_path, broker, sim, extra=""):
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False, "reader": "sim"}  # fmt: skip
    bus = {"host": "127.0.0.1", "port": broker.port, "username": "pi-printers", "password": password("pi-printers"),
           "keepalive_s": 5, "command_secret": SECRET}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine], broker=bus)
    path.write_text(path.read_text() + extra)
    return path


def small(tmp_path, n, segments=300):
    return circle_gcode(tmp_path / f"j{n}.gcode", segments, 150 / segments, centre=(110, 110))


class Booking:
    """A booking-system worker that can be down: while down it neither receives nor acknowledges."""

    def __init__(self, broker):
        self.client = Client(broker, "booking", client_id="booking-worker", persistent=True)
        self.up = True
        self.client.on_message = self._ack
        self.client.subscribe("afn/v1/fablab/+/usage", 1)

    def _ack(self, msg):
        record = json.loads(msg.payload)
        self.client.client.publish(msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1)

    def ids(self) -> list[str]:
        return [json.loads(p)["record_id"] for _, p, _ in self.client.received("usage")]


def test_network_partition_during_a_job_and_booking_system_down(tmp_path, broker, start_sim):
    sim = start_sim("marlin", speed=10)
    cfg = load_config(config(tmp_path, broker, sim))
    booking = Booking(broker)
    agent = Agent(cfg).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "the broker")
        submit(cfg, agent.ledger, "printer-1", small(tmp_path, 0, 3000), "cli")
        wait_for(lambda: agent.machines["printer-1"].state == "printing", 10, "printing")
        broker.stop()  # the lab's network drops mid-job
        assert agent.wait_idle("printer-1", 60), "the job runs on without the network"
        submit(cfg, agent.ledger, "printer-1", small(tmp_path, 1), "cli")
        assert agent.wait_idle("printer-1", 60)
        booking.client.close()  # and the booking system is down when the network comes back
        broker.start()
        wait_for(agent.bus.connected.is_set, 30, "reconnection")
        time.sleep(3.0)  # real time: records re-sent meanwhile must stay unacknowledged
        assert agent.ledger.undelivered() == 2, "nothing is acknowledged while the booking system is away"
        booking = Booking(broker)  # back: its persistent session kept what came meanwhile
        wait_for(lambda: agent.ledger.undelivered() == 0, 60, "every record acknowledged")
    finally:
        agent.stop()
        booking.client.close()
    records = {r["record_id"] for _, r in agent.ledger.usage_after()}
    assert set(booking.ids()) >= records and len(records) == 2


def test_kill_9_at_random_points_bills_every_job_once(tmp_path, broker, start_sim):
    """20 kills at random moments of a stream of short jobs; in the end every job has one record, the
    booking system holds every record, and repeats carry the same id."""
    rng = random.Random(20261126)
    sim = start_sim("marlin", speed=10)
    path = config(tmp_path, broker, sim)
    cfg = load_config(path)
    ledger = open_ledger(cfg)
    booking = Booking(broker)
    for n in range(30):
        submit(cfg, ledger, "printer-1", small(tmp_path, n, rng.choice((150, 400, 900))), "cli")

    def start():
        return subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip

    fleet = Client(broker, "fleet")

    def confirm():  # after each crash a person checks the printer and confirms (a signed command)
        time.sleep(0.3)  # real time: the restarted agent subscribes to its commands (no signal outside it)
        fleet.client.publish("afn/v1/fablab/printer-1/command", json.dumps(sign(SECRET, "confirm", "printer-1", "max")),
                             qos=1)  # fmt: skip

    kills = 0
    try:
        for _ in range(20):
            proc = start()
            confirm()
            time.sleep(rng.uniform(0.3, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            kills += 1
        proc = start()
        ended = ("completed", "cancelled", "failed", "interrupted")

        def settled() -> bool:
            """Confirm whenever the agent asks: its recovery may set the request after a first look
            found none (the new process had not run it yet), which left every job queued."""
            if ledger.machine("printer-1")["needs_confirmation"] is not None:
                confirm()
                return False
            return all(j["state"] in ended for j in ledger.jobs()) and ledger.undelivered() == 0

        try:
            wait_for(settled, 180, "every job ended and acknowledged")
        except AssertionError:
            states = sorted(j["state"] for j in ledger.jobs())
            raise AssertionError(f"jobs {states}, {ledger.undelivered()} records unacknowledged, "
                                 f"machine {dict(ledger.machine('printer-1'))}") from None  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
        booking.client.close()
        fleet.close()
    records = [r for _, r in ledger.usage_after(0, 1000)]
    jobs = ledger.jobs()
    assert kills == 20 and len(jobs) == 30
    assert len(records) == 30 and len({r["job"]["id"] for r in records}) == 30, "one record per job"
    got = booking.ids()
    assert set(got) == {r["record_id"] for r in records}, "the booking system has every record"
    outcomes = [r["job"]["outcome"] for r in records]
    print(f"kill -9 x{kills}: {outcomes.count('completed')} completed, {outcomes.count('interrupted')} interrupted, "
          f"{len(got)} messages for {len(records)} records")  # fmt: skip
    assert ledger.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_hostile_mqtt_payloads_and_a_badge_flood(tmp_path, broker, start_sim):
    """Garbage on every topic the agent reads changes nothing and crashes nothing; 300 unknown badges in a
    row are refused one by one and the machine still works."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    sim = start_sim("marlin", speed=10)
    cfg = load_config(config(tmp_path, broker, sim, '\n[access]\nbadge_secret = "site-badge-secret-0123456789"\n'
                                                 "debounce_s = 0\n"))  # fmt: skip
    agent = Agent(cfg).start()
    booking = Client(broker, "booking")
    fleet = Client(broker, "fleet")
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "the broker")
        agent.access.directory.apply_snapshot({"version": 3, "members": []}, "test")
        topics = [(fleet, "afn/v1/fablab/printer-1/command"), (booking, "afn/v1/fablab/printer-1/usage/ack"),
                  (booking, "afn/v1/fablab/_directory/snapshot"), (booking, "afn/v1/fablab/_directory/delta")]  # fmt: skip
        payloads = st.one_of(
            st.binary(max_size=300),
            st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                         max_leaves=12).map(lambda v: json.dumps(v).encode()),
        )  # fmt: skip

        @given(payload=payloads, which=st.integers(0, len(topics) - 1))
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(payload, which):
            client, topic = topics[which]
            client.client.publish(topic, payload, qos=0)

        fuzz()
        time.sleep(1.0)  # real time: the broker delivers what it let through
        assert agent.bus.connected.is_set() and agent.pump.is_alive()
        assert agent.ledger.machine("printer-1")["locked"] == 0, "no command got through"
        assert agent.access.directory.meta()["version"] == 3, "no garbage directory was taken"
        refused = [a for a in agent.ledger.audit_log("printer-1", 1000) if a["action"].startswith("command:")]
        assert refused and all(a["result"] == "refused" for a in refused)
        for n in range(300):
            agent.access.sim_reader("printer-1").present(f"FF{n:08X}")
        wait_for(lambda: sum(a["action"] == "badge" for a in agent.ledger.audit_log("printer-1", 1000)) >= 300, 30,
                 "every badge decided")  # fmt: skip
        assert agent.access.sessions.current("printer-1") is None
        submit(cfg, agent.ledger, "printer-1", small(tmp_path, 0), "cli")
        assert agent.wait_idle("printer-1", 30), "the machine still works"
    finally:
        booking.close()
        fleet.close()
        agent.stop()
