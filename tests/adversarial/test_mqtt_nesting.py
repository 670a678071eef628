"""Issue 15, first class: a deeply nested 4 KB JSON message on any topic the agent reads used to raise
RecursionError in paho's network thread and kill it for good. Played against a real Mosquitto with the
shipped ACLs; retained and QoS 1 copies included (they come back at every start)."""

from __future__ import annotations

import json
import time

import pytest

from afn_agent.agent import Agent
from afn_agent.bus.tokens import sign
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.payload import Malformed, decode_json
from tests.broker import Client
from tests.faults.test_delivery_faults import SECRET, Booking, config, small
from tests.helpers import wait_for

NESTED = b"[" * 2000 + b"]" * 2000  # 4 KB
NESTED_OBJ = b'{"a":' * 1000 + b"1" + b"}" * 1000


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (NESTED, "nested 2000 deep"),
        (NESTED_OBJ, "nested 1000 deep"),
        (b"x" * (2 << 20), "bytes (at most"),
        (b"\xff\xfe", "not JSON"),
        (b'{"a": [1, 2', "not JSON"),
    ],
)
def test_the_bounded_decoder_refuses_with_a_reason(payload, reason):
    with pytest.raises(Malformed, match=reason.replace("(", r"\(")):
        decode_json(payload)


def test_the_bounded_decoder_counts_brackets_inside_strings_as_text():
    assert decode_json(b'{"s": "' + b"[" * 100 + b'"}') == {"s": "[" * 100}
    assert decode_json(b"[" * 32 + b"]" * 32) is not None


def test_nested_json_on_every_topic_leaves_the_agent_hearing_commands_and_acks(tmp_path, broker, start_sim):
    sim = start_sim("marlin", speed=10)
    booking = Client(broker, "booking")
    fleet = Client(broker, "fleet")
    # a poisoned retained snapshot waits for the agent before it even starts
    booking.client.publish("afn/v1/fablab/_directory/snapshot", NESTED, qos=1, retain=True).wait_for_publish(
        5
    )
    cfg = load_config(config(tmp_path, broker, sim))
    agent = Agent(cfg).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "the broker")
        for client, topic in (
            (fleet, "afn/v1/fablab/printer-1/command"),
            (booking, "afn/v1/fablab/printer-1/usage/ack"),
            (booking, "afn/v1/fablab/_directory/delta"),
        ):
            for payload in (NESTED, NESTED_OBJ):
                client.client.publish(topic, payload, qos=1).wait_for_publish(5)
        time.sleep(1.0)  # real time: the broker delivers the nested payloads
        assert agent.bus.up and agent.bus.network_restarts == 0, "the network loop never failed"
        # it still hears a manager's command ...
        fleet.subscribe("afn/v1/fablab/printer-1/events")
        fleet.client.publish(
            "afn/v1/fablab/printer-1/command",
            json.dumps(sign(SECRET, "lock", "printer-1", "manager-ana")),
            qos=1,
        )
        wait_for(lambda: agent.ledger.machine("printer-1")["locked"] == 1, 10, "the command obeyed")
        fleet.client.publish(
            "afn/v1/fablab/printer-1/command",
            json.dumps(sign(SECRET, "unlock", "printer-1", "manager-ana")),
            qos=1,
        )
        wait_for(lambda: agent.ledger.machine("printer-1")["locked"] == 0, 10, "the command obeyed")
        # ... and the booking system's acknowledgements
        worker = Booking(broker)
        submit(cfg, agent.ledger, "printer-1", small(tmp_path, 0), "cli")
        assert agent.wait_idle("printer-1", 30)
        wait_for(
            lambda: len(agent.ledger.usage_after()) == 1 and agent.ledger.undelivered() == 0, 20, "the ack"
        )
        worker.client.close()
        audit = agent.ledger.audit_log(None, 1000)
        refused = [a for a in audit if json.loads(a["detail_json"]).get("code") == "malformed"]
        assert len(refused) >= 2, "the two poisoned commands are refused and audited"
        assert (
            agent.bus.malformed >= 2
        )  # the two acks; the directory refusals are events, the commands audit rows
    finally:
        booking.client.publish("afn/v1/fablab/_directory/snapshot", b"", qos=1, retain=True)
        booking.close()
        fleet.close()
        agent.stop()
