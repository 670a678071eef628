"""Issue 15, classes 1 (the network thread), 10 (client-id takeover) and 12 (huge payloads), against a
real Mosquitto running the shipped broker settings (tests/broker.py reads deploy/mosquitto/mosquitto.conf)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from afn_agent.agent import Agent
from afn_agent.bus.tokens import sign
from afn_agent.config import load_config
from tests.broker import Client, password
from tests.faults.test_delivery_faults import SECRET, config
from tests.helpers import wait_for


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def command(fleet: Client, name: str) -> None:
    payload = json.dumps(sign(SECRET, name, "printer-1", "manager-ana"))
    fleet.client.publish("afn/v1/fablab/printer-1/command", payload, qos=1).wait_for_publish(5)


def obeys_a_manager(agent: Agent, broker) -> None:
    """The agent still hears and obeys a signed command from the fleet."""
    fleet = Client(broker, "fleet")
    try:
        command(fleet, "lock")
        wait_for(lambda: agent.ledger.machine("printer-1")["locked"] == 1, 10, "the command obeyed")
    finally:
        fleet.close()


@pytest.fixture
def agent(tmp_path, broker, start_sim):
    """A started agent with one simulated printer, connected to the broker."""
    sim = start_sim("marlin", speed=10)
    running = Agent(load_config(config(tmp_path, broker, sim))).start()
    wait_for(running.bus.connected.is_set, 10, "the broker")
    yield running
    running.stop()


def test_another_users_password_with_the_agents_client_id_cannot_take_its_session(agent, broker):
    agent_id = agent.bus.client._client_id.decode()
    drops = []
    for _ in range(5):  # the booking system's credentials, the agent's client id
        thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=agent_id, protocol=mqtt.MQTTv5)
        thief.username_pw_set("booking", password("booking"))
        thief.connect("127.0.0.1", broker.port, 10)
        thief.loop_start()
        time.sleep(0.4)  # real time: the broker acts on the CONNECT within this (it kicked the agent at once before)
        drops.append(not agent.bus.connected.is_set())
        thief.disconnect()
        thief.loop_stop()
    assert not any(drops), "the agent was never kicked off"
    assert "pi-printers already connected" not in broker.log()
    obeys_a_manager(agent, broker)


def test_payloads_beyond_the_broker_limit_never_reach_the_agent(agent, broker, tmp_path):
    big = tmp_path / "big.json"
    time.sleep(1.0)  # real time: the agent settled: its memory is measured from here
    before = rss_mb()
    for size_mb in (50, 50, 50, 3):
        big.write_bytes(b"[" + b"1," * (size_mb << 19) + b"1]")
        run = subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-u", "booking", "-P", password("booking"),
             "-q", "1", "-t", "afn/v1/fablab/_directory/snapshot", "-f", str(big)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert run.returncode != 0 or b"rror" in run.stderr, "the broker refuses the publisher"
    # 1.5 MB: under the broker's limit, over what the agent asked for (MQTT 5 maximum packet size).
    # (Connected after mosquitto_pub: the two share the booking user, so one would take the other's session.)
    booking = Client(broker, "booking")
    try:
        booking.client.publish("afn/v1/fablab/_directory/delta", b"x" * 1_500_000, qos=1).wait_for_publish(5)
    finally:
        booking.close()
    time.sleep(1.0)  # real time: what the broker would deliver arrives within this
    grew = rss_mb() - before
    assert grew < 30, f"RSS grew {grew:.0f} MB"
    assert agent.bus.up and agent.bus.network_restarts == 0
    obeys_a_manager(agent, broker)


def test_an_exception_escaping_pahos_loop_restarts_it_and_health_tells(agent, broker):
    def handler_bug(client, userdata, msg):
        raise RuntimeError("a handler bug nobody caught")

    agent.bus.client.on_message = handler_bug  # what an unguarded handler would do to paho's thread
    fleet = Client(broker, "fleet")
    try:
        command(fleet, "lock")
        wait_for(lambda: agent.bus.network_restarts == 1, 10, "the loop restarted")
        wait_for(lambda: agent.bus.up, 15, "reconnected on a new client")
        command(fleet, "lock")  # QoS 1 on a persistent session: the first one may come back too
        wait_for(lambda: agent.ledger.machine("printer-1")["locked"] == 1, 10, "the command obeyed")
    finally:
        fleet.close()
    audit = [a for a in agent.ledger.audit_log(None, 100) if a["action"] == "network"]
    assert audit and json.loads(audit[0]["detail_json"])["code"] == "network-loop-failed"
