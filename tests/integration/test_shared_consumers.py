"""The booking side scaled out: two `afn-agent consume` processes on an MQTT 5 shared subscription of a real
Mosquitto 2 (the deploy ACLs, user booking) share 1,000 usage records; one is killed mid-run; every record
is kept once by id and acknowledged, none lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from afn_agent.booking.usage_consumer import UsageConsumer, UsageStore
from afn_agent.bus.client import Bus
from afn_agent.config import BrokerConfig
from afn_agent.ledger import Ledger
from tests.broker import Client, password
from tests.helpers import wait_for
from tests.integration.test_bus import valid
from tests.unit.test_ledger import FIGURES, TARIFF

RECORDS = 1000


def records(ledger: Ledger, n: int) -> None:
    for machine in ("printer-1", "printer-2"):
        ledger.upsert_machine(machine, "fdm-printer", "marlin2")
    for i in range(n):
        job = ledger.add_job(f"printer-{i % 2 + 1}", "/spool/a.gcode", f"part-{i}.gcode", "ab" * 32, 1234, "test",
                             {"time_s": 600.0}, member_id=f"m-{i % 7}")  # fmt: skip
        ledger.transition(job, "starting", "test")
        ledger.transition(job, "running", "test")
        ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")


def consumer(tmp_path, broker, name: str) -> subprocess.Popen[bytes]:
    """One instance; each has its own broker user with the booking ACL (the shipped broker makes a
    client's id its user name: one connection per user), all share the group and the store."""
    config = tmp_path / f"{name}.toml"
    user = broker.user_for("booking", name)
    config.write_text(f'[consumer]\nsite = "fablab"\nstore = "{tmp_path / "booking.sqlite3"}"\n\n[broker]\n'
                      f'port = {broker.port}\nusername = "{user}"\npassword = "{password("booking")}"\n')  # fmt: skip
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "afn_agent", "consume", "--config", str(config), "--name", name],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def kept(tmp_path) -> list[tuple[str, str]]:
    db = tmp_path / "booking.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return list(conn.execute("SELECT record_id, consumer FROM usage"))
        except sqlite3.OperationalError:
            return []


def test_two_consumers_share_a_thousand_records_and_one_dies(tmp_path, broker):
    ledger = Ledger(tmp_path / "agent.sqlite3", "fablab")
    records(ledger, RECORDS)
    assert ledger.undelivered() == RECORDS
    first, second = consumer(tmp_path, broker, "worker-1"), consumer(tmp_path, broker, "worker-2")
    joined = "$share/booking/afn/v1/fablab/+/usage (QoS 1)"
    wait_for(lambda: broker.log().count(joined) >= 2, 20, "both workers in the group")  # before any record
    cfg = BrokerConfig(port=broker.port, username="pi-printers", password=password("pi-printers"), keepalive_s=5)
    bus = Bus(cfg, "fablab", "pi-printers", ledger, ["printer-1", "printer-2"], lambda m: {"machine": m}).start()
    try:
        wait_for(lambda: len(kept(tmp_path)) >= RECORDS // 3, 60, "a third of the records kept")
        second.send_signal(signal.SIGKILL)  # mid-run, without a goodbye: what it had in flight is its to lose
        second.wait()
        wait_for(lambda: ledger.undelivered() == 0, 120, "every record acknowledged")
    finally:
        bus.stop()
        first.send_signal(signal.SIGTERM)
        first.wait(10)
    rows = kept(tmp_path)
    ids = [r for r, _ in rows]
    assert len(ids) == len(set(ids)) == RECORDS, "each record kept once by id"
    want = {r for (r,) in ledger.conn.execute("SELECT id FROM usage_records")}
    assert set(ids) == want
    by = {c: sum(1 for _, who in rows if who == c) for c in ("worker-1", "worker-2")}
    assert by["worker-1"] > 0 and by["worker-2"] > 0, f"the load was shared: {by}"
    print(f"{RECORDS} records: {by} kept; worker-2 killed after {by['worker-2']}")


def test_a_consumer_coming_back_gets_the_records_at_once_not_at_the_next_backoff(tmp_path, broker):
    """After a long outage the outbox waits minutes between resends; the consumer's retained `online`
    (deploy ACL: the booking user only) makes the agents send what is unacknowledged at once."""
    ledger = Ledger(tmp_path / "agent.sqlite3", "fablab")
    records(ledger, 3)
    cfg = BrokerConfig(port=broker.port, username="pi-printers", password=password("pi-printers"), keepalive_s=5,
                       session="clean")  # fmt: skip
    bus = Bus(cfg, "fablab", "pi-printers", ledger, ["printer-1", "printer-2"], lambda m: {"machine": m}).start()
    later = time.time() + 600
    first_try = lambda: [r for (r,) in ledger.conn.execute("SELECT next_try FROM outbox WHERE acked_at IS NULL")]  # noqa: E731
    try:
        wait_for(lambda: bus.connected.is_set() and ledger.outbox_due() == [], 10, "the records tried once")
        with ledger.tx() as c:  # as after an hour with nobody to acknowledge: the next try is 10 min away
            c.execute("UPDATE outbox SET next_try=?, attempts=8 WHERE acked_at IS NULL", (later,))
        # someone else saying a consumer is online is refused by the ACL, and bad payloads are dropped
        intruder = Client(broker, "fleet", client_id="fleet-x")
        intruder.subscribe("afn/v1/fablab/_consumers/#")
        intruder.client.publish("afn/v1/fablab/_consumers/fake", '{"state": "online"}', qos=1).wait_for_publish(5)
        time.sleep(1.0)  # real time: the agent would have acted within this
        assert first_try() == [later] * 3, "an intruder's 'online' moved nothing"
        booking = Client(broker, "booking", client_id="booking-x")
        booking.client.publish("afn/v1/fablab/_consumers/x", b"[" * 10000, qos=1).wait_for_publish(5)
        wait_for(lambda: bus.malformed >= 1, 5, "the bad payload refused")
        started = time.monotonic()
        store = UsageStore(tmp_path / "booking.sqlite3")
        user = broker.user_for("booking", "back")
        back = UsageConsumer(BrokerConfig(port=broker.port, username=user, password=password("booking"),
                                          keepalive_s=5), ["fablab"], store, "back").start()  # fmt: skip
        wait_for(lambda: ledger.undelivered() == 0, 10, "the records sent again at once, and acknowledged")
        print(f"3 records acknowledged {time.monotonic() - started:.1f} s after the consumer came back")
        assert store.count() == 3
        back.stop()
        said = lambda: [valid("consumer", p)["state"] for t, p, _ in intruder.received("_consumers/back")]  # noqa: E731
        wait_for(lambda: said()[-1:] == ["offline"], 5, "the consumer's online, then offline")
        assert "online" in said()
        booking.close()
        intruder.close()
    finally:
        bus.stop()
