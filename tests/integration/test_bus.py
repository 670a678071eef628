"""The agent on a real Mosquitto with the deploy ACLs: status, telemetry, events, usage, commands."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from afn_agent.agent import Agent, open_ledger
from afn_agent.bus import client as bus_client
from afn_agent.bus.tokens import sign
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.ledger.usage import SCHEMA_FILE as USAGE_SCHEMA
from afn_agent.sim.jobs import circle_gcode
from tests.broker import Client, password
from tests.helpers import wait_for, write_config

SECRET = "manager-signing-secret-0123456789"
SCHEMAS = Path(bus_client.__file__).with_name("schemas")


def valid(kind: str, payload: bytes | dict) -> dict:
    """The payload, checked against its documented schema (docs/mqtt.md)."""
    data = json.loads(payload) if isinstance(payload, bytes | str) else payload
    jsonschema.validate(data, json.loads((SCHEMAS / f"{kind}.json").read_text()))
    return data


def config_for(tmp_path, broker, sims, agent_id="pi-printers", telemetry_hz=1.0):
    machines = [
        {"id": f"printer-{i + 1}", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
         "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}
        for i, sim in enumerate(sims)
    ]  # fmt: skip
    bus = {"host": "127.0.0.1", "port": broker.port, "username": agent_id, "password": password(agent_id),
           "keepalive_s": 5, "telemetry_hz": telemetry_hz, "command_secret": SECRET}  # fmt: skip
    return write_config(tmp_path / "agent.toml", machines, agent_id=agent_id, broker=bus)


def small_job(tmp_path, n=0, segments=60):
    return circle_gcode(
        tmp_path / f"small-{n}.gcode", segments, 0.5 if segments <= 500 else 0.05, centre=(110, 110)
    )


@pytest.fixture
def printers(start_sim):
    return lambda n=1, **kw: [start_sim("marlin", speed=10, **kw) for _ in range(n)]


def test_status_is_retained_and_sent_again_after_a_broker_restart(tmp_path, broker, printers):
    cfg = load_config(config_for(tmp_path, broker, printers()))
    agent = Agent(cfg).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "bus connection")
        fleet = Client(broker, "fleet")
        fleet.subscribe("afn/v1/fablab/printer-1/status")
        wait_for(lambda: [m for m in fleet.received("status") if m[2]], 5, "retained status")
        # the retained copy may still be the `connecting` one when the pump has not yet published `idle`
        statuses = lambda: [valid("status", m[1]) for m in fleet.received("status")]  # noqa: E731
        wait_for(lambda: statuses()[-1]["state"] == "idle", 5, "idle status")
        status = statuses()[-1]
        assert status["machine"] == "printer-1" and status["agent"] == "pi-printers"
        fleet.close()
        broker.stop()
        wait_for(lambda: not agent.bus.connected.is_set(), 10, "the agent to notice")
        broker.start()
        wait_for(agent.bus.connected.is_set, 20, "reconnection")
        late = Client(broker, "fleet", client_id="late-fleet")
        late.subscribe("afn/v1/fablab/+/status")
        assert wait_for(
            lambda: [m for m in late.received("status") if m[2] and valid("status", m[1])["state"] == "idle"],
            5,
            "retained idle status after restart",
        )
        late.close()
    finally:
        agent.stop()


def test_a_status_change_while_the_connection_comes_up_is_sent(tmp_path, broker):
    """A CI run saw the retained status stay `connecting` though the machine was idle: the pump's change
    came while the bus was publishing the statuses of a new connection, before it counted as connected,
    and was dropped (with status_every_s = 0, for good). Here the change comes at that very moment."""
    from afn_agent.bus.client import Bus
    from afn_agent.config import BrokerConfig
    from afn_agent.ledger import Ledger

    state = {"printer-1": "connecting"}
    bus: Bus | None = None

    def status(machine_id: str) -> dict:
        said = state[machine_id]
        if said == "connecting" and bus is not None:
            state[machine_id] = "idle"  # the pump's change, right as the connect publishes the status
            bus.status_changed(machine_id)
        return {"machine": machine_id, "state": said}

    cfg = BrokerConfig(port=broker.port, username="pi-printers", password=password("pi-printers"), keepalive_s=5)
    bus = Bus(cfg, "fablab", "pi-printers", Ledger(tmp_path / "agent.sqlite3", "fablab"), ["printer-1"], status)
    bus.start()
    try:
        wait_for(bus.connected.is_set, 10, "bus connection")
        fleet = Client(broker, "fleet")
        fleet.subscribe("afn/v1/fablab/printer-1/status")
        wait_for(lambda: [m for m in fleet.received("status") if json.loads(m[1])["state"] == "idle"], 5,
                 "the idle status")  # fmt: skip
        assert json.loads(fleet.received("status")[-1][1])["state"] == "idle"
        fleet.close()
        state["printer-1"] = "locked"  # a change just before the agent stops is still sent
        bus.status_changed("printer-1")
    finally:
        bus.stop()
    late = Client(broker, "fleet", client_id="late-fleet")
    late.subscribe("afn/v1/fablab/printer-1/status")
    retained = wait_for(lambda: [m for m in late.received("status") if m[2]], 5, "the retained status")
    assert json.loads(retained[-1][1])["state"] == "locked"
    late.close()


def test_last_will_says_offline_when_the_agent_is_killed(tmp_path, broker, printers):
    config = config_for(tmp_path, broker, printers())
    fleet = Client(broker, "fleet")
    fleet.subscribe("afn/v1/fablab/_agents/#")
    proc = subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(
            lambda: any(valid("availability", p)["state"] == "online" for _, p, _ in fleet.received()),
            20,
            "birth",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        t0 = time.monotonic()
        # keepalive 5 s: the broker declares the client gone within 1.5 keepalives
        wait_for(
            lambda: valid("availability", fleet.received()[-1][1])["state"] == "offline", 15, "last will"
        )
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
        fleet.close()


def test_telemetry_is_rate_limited(tmp_path, broker, printers):
    cfg = load_config(config_for(tmp_path, broker, printers(), telemetry_hz=2.0))
    agent = Agent(cfg).start()
    fleet = Client(broker, "fleet")
    fleet.subscribe("afn/v1/fablab/printer-1/telemetry", 0)
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        submit(cfg, agent.ledger, "printer-1", small_job(tmp_path, segments=6000), "test")
        time.sleep(6.0)  # real time: the window whose telemetry rate is measured
        for _, payload, _ in fleet.received("telemetry"):
            valid("telemetry", payload)
        times = [t for topic, t in fleet.arrivals if topic.endswith("telemetry")]
        assert len(times) >= 8, "telemetry flows while printing"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.5 * 0.8, f"faster than 2 Hz: {min(gaps):.3f} s between arrivals"
        assert len(times) <= 6.0 * 2 + 1
    finally:
        fleet.close()
        agent.stop()


def test_commands_signed_expired_replayed_and_forged(tmp_path, broker, printers):
    cfg = load_config(config_for(tmp_path, broker, printers()))
    agent = Agent(cfg).start()
    fleet = Client(broker, "fleet")
    fleet.subscribe("afn/v1/fablab/printer-1/events")
    topic = "afn/v1/fablab/printer-1/command"
    try:
        wait_for(agent.bus.connected.is_set, 10, "bus connection")
        time.sleep(0.5)  # real time: the agent's subscriptions are made once it is connected (no signal)

        def results() -> list[dict]:
            """Command results among the events (the machine's own events, e.g. connecting, come too)."""
            events = (json.loads(payload) for _, payload, _ in fleet.received("events"))
            return [e for e in events if e.get("type") == "command"]

        def send(payload) -> dict:
            before = len(results())
            fleet.client.publish(topic, json.dumps(payload), qos=1)
            wait_for(lambda: len(results()) > before, 5, "command result")
            return valid("event", results()[-1])

        good = valid("command", sign(SECRET, "lock", "printer-1", "manager-ana", reason="belt change"))
        assert send(good)["result"] == "done"
        assert agent.ledger.machine("printer-1")["locked"] == 1
        assert send(good)["code"] == "replayed"
        forged = dict(sign(SECRET, "unlock", "printer-1", "manager-ana"), actor="intruder")
        assert send(forged)["code"] == "bad_signature"
        assert send(sign("some-other-secret-000000", "unlock", "printer-1", "x"))["code"] == "bad_signature"
        assert send(sign(SECRET, "unlock", "printer-1", "manager-ana", ttl_s=-1))["code"] == "expired"
        assert send(sign(SECRET, "unlock", "printer-2", "manager-ana"))["code"] == "wrong_machine"
        assert agent.ledger.machine("printer-1")["locked"] == 1, "no refused command changed anything"
        assert send(sign(SECRET, "unlock", "printer-1", "manager-ana"))["result"] == "done"
        assert agent.ledger.machine("printer-1")["locked"] == 0
        audit = agent.ledger.audit_log("printer-1")
        assert {a["result"] for a in audit if a["action"].startswith("command:")} == {"done", "refused"}
        assert sum(a["action"].startswith("command:") for a in audit) == 7
    finally:
        fleet.close()
        agent.stop()


def test_an_agent_cannot_write_another_agents_topics(broker):
    fleet = Client(broker, "fleet")
    fleet.subscribe("afn/v1/fablab/#")
    rogue = Client(broker, "pi-printers", client_id="rogue")
    rogue.client.publish("afn/v1/fablab/mill-1/status", b'{"state": "idle"}', qos=1).wait_for_publish(5)
    rogue.client.publish("afn/v1/fablab/printer-1/command", b"{}", qos=1).wait_for_publish(5)
    rogue.client.publish("afn/v1/fablab/printer-1/status", b'{"state": "own"}', qos=1).wait_for_publish(5)
    wait_for(lambda: fleet.received("printer-1/status"), 5, "the agent's own topic")
    time.sleep(0.5)  # real time: a rogue message the broker let through would arrive within this
    topics = {t for t, _, _ in fleet.received()}
    assert "afn/v1/fablab/mill-1/status" not in topics
    assert "afn/v1/fablab/printer-1/command" not in topics
    rogue.close()
    fleet.close()


def test_usage_survives_broker_outage_and_agent_kill_over_50_jobs(tmp_path, broker, printers):
    """Every record reaches the booking system; repeats carry the same id; all end acknowledged."""
    sims = printers(2)
    config = config_for(tmp_path, broker, sims)
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    booking = Client(broker, "booking", client_id="booking-worker", persistent=True)

    def ack(msg):
        record = json.loads(msg.payload)
        booking.client.publish(msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1)

    booking.on_message = ack
    booking.subscribe("afn/v1/fablab/+/usage", 1)
    for n in range(50):
        submit(cfg, ledger, f"printer-{n % 2 + 1}", small_job(tmp_path, n), "test", member_id=f"m-{n}")

    def run():
        log = (tmp_path / f"agent-{time.monotonic()}.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip

    def ended() -> int:
        return sum(j["state"] in ("completed", "cancelled", "failed", "interrupted") for j in ledger.jobs())

    agent = run()
    try:
        wait_for(lambda: ended() >= 8, 60, "first jobs")
        broker.stop()
        wait_for(lambda: ended() >= 20, 60, "jobs while the broker is down")
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        agent = run()
        time.sleep(2.0)  # real time: the restarted agent runs jobs with the broker still down
        broker.start()
        wait_for(lambda: ended() == 50, 120, "all 50 jobs")
        wait_for(lambda: ledger.undelivered() == 0, 60, "every record acknowledged")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        booking.close()
    records = {r["record_id"]: r for _, r in ledger.usage_after(0, 1000)}
    assert len(records) == 50 and len({r["job"]["id"] for r in records.values()}) == 50
    got = [json.loads(p) for _, p, _ in booking.received("usage")]
    jsonschema.validate(got[0], json.loads(USAGE_SCHEMA.read_text()))
    ids = [r["record_id"] for r in got]
    assert set(ids) == set(records), "every record received, none unknown"
    for r in got:
        assert r == records[r["record_id"]], "a repeat is the same record"
    print(
        f"50 jobs: {len(got)} usage messages for {len(records)} records ({len(got) - len(records)} repeats)"
    )


def v311_only_proxy(broker):
    """A broker front that refuses MQTT 5 as a 3.1.1-only broker does, and passes 3.1.1 through."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen: list[int] = []

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            first = conn.recv(65536)
            i = 1
            while i < len(first) and first[i] & 0x80:  # remaining length: 1 to 4 bytes
                i += 1
            level = first[i + 7] if len(first) > i + 7 else 0  # after the length, "\0\4MQTT", then the level
            seen.append(level)
            if level == 5:
                conn.sendall(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
                conn.close()
                continue
            up = socket.create_connection(("127.0.0.1", broker.port))
            up.sendall(first)
            threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
            threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, seen


def test_falls_back_to_mqtt_311_and_announces_itself_to_home_assistant(tmp_path, broker, printers):
    proxy, seen = v311_only_proxy(broker)
    config = config_for(tmp_path, broker, printers())
    text = config.read_text().replace(f"port = {broker.port}", f"port = {proxy.getsockname()[1]}")
    # a second node (the broker behind the proxy): the fallback's goodbye must not move the agent to it
    config.write_text(text + f'home_assistant = true\nnodes = ["127.0.0.1:{broker.port}"]\n')
    fleet = Client(broker, "fleet")
    fleet.subscribe("homeassistant/#")
    fleet.subscribe("afn/v1/fablab/printer-1/status")
    agent = Agent(load_config(config)).start()
    try:
        wait_for(agent.bus.connected.is_set, 15, "connection through the 3.1.1 front")
        assert seen[0] == 5 and 4 in seen, f"tried MQTT 5 first, then 3.1.1: {seen}"
        assert agent.bus.nodes.switches == 0 and agent.bus.nodes.current[1] == proxy.getsockname()[1]
        wait_for(lambda: len(fleet.received("/config")) >= 6, 5, "discovery configs")
        configs = {t: json.loads(p) for t, p, _ in fleet.received("/config")}
        state = configs["homeassistant/sensor/afn_fablab_printer-1/state/config"]
        assert state["state_topic"] == "afn/v1/fablab/printer-1/status"
        assert state["availability_topic"] == "afn/v1/fablab/_agents/pi-printers"
        assert state["device"]["model"] == "printer (fdm-printer)"
        late = Client(broker, "fleet", client_id="late-ha")
        late.subscribe("homeassistant/#")
        wait_for(lambda: len(late.received("/config")) >= 6, 5, "retained discovery configs")
        assert all(retained for _, _, retained in late.received("/config"))
        late.close()
        assert wait_for(lambda: fleet.received("printer-1/status"), 5, "status through 3.1.1")
    finally:
        agent.stop()
        proxy.close()
        fleet.close()


def test_tls_with_a_client_certificate(tmp_path, printers):
    from tests.broker import Broker

    broker = Broker(tmp_path / "tls-broker", tls=True).start()
    sims = printers()
    try:
        plain = config_for(tmp_path, broker, sims)
        certs = broker.certs
        tls = {"tls": True, "ca_file": str(certs["ca"]), "cert_file": str(certs["client"]),
               "key_file": str(certs["client_key"])}  # fmt: skip
        text = plain.read_text().replace(f"port = {broker.port}", f"port = {broker.tls_port}")
        text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in tls.items())
        plain.write_text(text)
        fleet = Client(broker, "fleet")
        fleet.subscribe("afn/v1/fablab/printer-1/status")
        agent = Agent(load_config(plain)).start()
        try:
            wait_for(agent.bus.connected.is_set, 15, "TLS connection")
            wait_for(lambda: fleet.received("printer-1/status"), 5, "status over TLS")
        finally:
            agent.stop()
        # without the client certificate the broker refuses the handshake
        plain.write_text(text.replace(f'cert_file = "{certs["client"]}"\n', "").replace(
            f'key_file = "{certs["client_key"]}"\n', ""))  # fmt: skip
        agent = Agent(load_config(plain)).start()
        try:
            time.sleep(2.0)  # real time: a handshake, if the broker allowed one, would be done
            assert not agent.bus.connected.is_set()
        finally:
            agent.stop()
        fleet.close()
    finally:
        broker.stop()


def test_firmware_fault_reaches_the_fleet_within_a_second(tmp_path, broker, start_sim):
    """Thermal runaway: the fleet hears it as an alarm with its meaning in words, in under 1 s."""
    sim = start_sim("marlin", speed=10, thermal_runaway_at=300)
    cfg = load_config(config_for(tmp_path, broker, [sim]))
    fleet = Client(broker, "fleet")
    fleet.subscribe("afn/v1/fablab/printer-1/events")
    agent = Agent(cfg).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "bus connection")
        submit(cfg, agent.ledger, "printer-1", small_job(tmp_path, segments=2000), "test")
        wait_for(lambda: any(b'"fault"' in p for _, p, _ in fleet.received("events")), 20, "the fault event")
        events = fleet.received("events")  # messages and arrivals are appended together, in order
        arrivals = [t for topic, t in fleet.arrivals if topic.endswith("events")]
        index = next(i for i, (_, p, _) in enumerate(events) if b'"fault"' in p)
        fault = valid("event", events[index][1])
        delay = (time.time() - time.monotonic() + arrivals[index]) - fault["t"]
        assert "runaway" in fault["reason"].lower()
        assert delay < 1.0, f"{delay:.3f} s from the firmware's words to the fleet"
        print(f"fault to fleet: {delay * 1000:.0f} ms")
    finally:
        fleet.close()
        agent.stop()
