"""Several broker addresses ([broker] nodes): two real Mosquittos with the deploy ACLs stand for two nodes.
The agent and the fleet dashboard move to the next node when theirs dies, publish there what they would
after a restart (retained status, online, the outbox's records), and stay on a node while it is up."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from afn_agent.agent import Agent
from afn_agent.bus.nodes import Nodes, parse
from afn_agent.config import load_config
from afn_agent.config_model import BrokerTable
from afn_agent.fleet.service import Fleet, FleetConfig, broker_config
from afn_agent.intake import submit
from tests.broker import Broker, Client, password
from tests.helpers import wait_for
from tests.integration.test_bus import config_for, small_job


@pytest.fixture
def two_nodes(tmp_path):
    nodes = [Broker(tmp_path / "node-a").start(), Broker(tmp_path / "node-b").start()]
    yield nodes
    for n in nodes:
        n.stop()


def test_parse_and_rotation():
    assert parse("broker2.lab.lan", 1883) == ("broker2.lab.lan", 1883)
    assert parse("broker2.lab.lan:8883", 1883) == ("broker2.lab.lan", 8883)
    assert parse("[fd00::2]:1884", 1883) == ("fd00::2", 1884)

    class Paho:  # what Nodes touches of a paho client
        host, port, delays = "a", 1, []

        def reconnect_delay_set(self, min_delay, max_delay):
            self.delays.append((min_delay, max_delay))

    client = Paho()
    client.on_connect = None
    nodes = Nodes([("a", 1), ("b", 2), ("c", 3)], rand=lambda: 0.5)
    nodes.attach(client)  # type: ignore[arg-type]
    assert client.delays == [(1.5, 60)]  # paho's first retry drawn between 1 and 2 s: jitter
    client.delays.clear()
    for want in (("b", 2), ("c", 3), ("a", 1), ("b", 2), ("c", 3), ("a", 1)):
        client.on_connect_fail(client, None)
        assert (client.host, client.port) == want == nodes.current
    # the wait doubles once per round of nodes, not once per attempt
    assert [d for d, _ in client.delays] == [1.5, 1.5, 3.0, 3.0, 3.0, 6.0]

    class Ok:
        is_failure = False

    client.on_connect(client, None, None, Ok())  # connected to a: a later outage starts short again
    client.delays.clear()
    client.on_disconnect(client, None)
    client.on_connect_fail(client, None)
    client.on_connect_fail(client, None)
    assert [d for d, _ in client.delays] == [1.5, 1.5, 3.0] and nodes.current == ("a", 1)
    single = Nodes([("a", 1)])
    single.failed(client)  # type: ignore[arg-type]
    assert single.current == ("a", 1) and single.switches == 0


def test_a_bad_node_address_names_the_field():
    with pytest.raises(ValueError, match="host or host:port"):
        BrokerTable(nodes=["broker2:99999"])
    assert broker_config(BrokerTable(nodes=["b2:1884", "[fd00::3]"])).nodes == ("b2:1884", "[fd00::3]")


def test_agent_and_dashboard_move_to_the_next_node_and_stay_there(tmp_path, two_nodes, start_sim):
    a, b = two_nodes
    config = config_for(tmp_path, a, [start_sim("marlin", speed=10)])
    config.write_text(config.read_text() + f'nodes = ["127.0.0.1:{b.port}"]\n')
    cfg = load_config(config)
    fleet_cfg = FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, None,
                            {"max": hashlib.sha256(b"max-key").hexdigest()},
                            broker_config(BrokerTable(port=a.port, nodes=[f"127.0.0.1:{b.port}"],
                                                      username="fleet", password=password("fleet"))))  # fmt: skip
    fleet = Fleet(fleet_cfg).start()
    agent = Agent(cfg).start()
    on_b = Client(b, "booking", client_id="booking-b", persistent=True)
    on_b.subscribe("afn/v1/fablab/+/usage", 1)
    on_b.on_message = lambda msg: on_b.client.publish(
        msg.topic + "/ack", json.dumps({"record_id": json.loads(msg.payload)["record_id"]}), qos=1)
    watcher = Client(b, "fleet", client_id="watch-b")
    watcher.subscribe("afn/v1/fablab/#")
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        wait_for(agent.bus.connected.is_set, 10, "the agent on node a")
        wait_for(fleet.connected.is_set, 10, "the dashboard on node a")
        assert agent.bus.nodes.current == ("127.0.0.1", a.port)
        wait_for(lambda: "printer-1" in fleet.state.machines, 10, "the dashboard seeing printer-1")
        assert not watcher.received("printer-1/status"), "nothing of the agent's on node b yet"
        a.stop()  # node a dies
        started = time.monotonic()
        submit(cfg, agent.ledger, "printer-1", small_job(tmp_path), "test", member_id="m-1", held=False)
        wait_for(lambda: agent.bus.connected.is_set() and agent.bus.nodes.current[1] == b.port, 30,
                 "the agent on node b")  # fmt: skip
        switch_s = time.monotonic() - started
        wait_for(lambda: watcher.received("printer-1/status"), 10, "the agent's status on node b")
        wait_for(lambda: any(b'"online"' in p for t, p, _ in watcher.received("/_agents/pi-printers")), 10,
                 "the agent online on node b")  # fmt: skip
        assert agent.wait_idle("printer-1", 30)
        wait_for(lambda: agent.ledger.undelivered() == 0, 30, "the job's usage record acknowledged on node b")
        wait_for(lambda: fleet.connected.is_set() and fleet.nodes.current[1] == b.port, 30, "the dashboard on b")
        wait_for(lambda: fleet.state.machines.get("printer-1", {}).get("state") == "idle", 10,
                 "the dashboard rebuilt from node b's retained status")  # fmt: skip
        a.start()  # node a is back: a healthy node is kept
        switches = agent.bus.nodes.switches
        time.sleep(3)  # real time: a needless switch back would happen within this
        assert agent.bus.nodes.current[1] == b.port and agent.bus.nodes.switches == switches
        print(f"agent on the next node {switch_s:.1f} s after its node died")
    finally:
        agent.stop()
        fleet.stop()
        on_b.close()
        watcher.close()


def test_start_up_with_the_first_node_down_uses_the_next(tmp_path, two_nodes, start_sim):
    from afn_agent.startup import broker as reachable

    a, b = two_nodes
    config = config_for(tmp_path, a, [start_sim("marlin", speed=10)])
    config.write_text(config.read_text() + f'nodes = ["127.0.0.1:{b.port}"]\nrequired = true\n')
    a.stop()
    cfg = load_config(config)
    assert reachable(cfg) is None, "one node answering is enough"
    b.stop()
    failure = reachable(cfg)
    assert failure is not None and "nor do its 1 other node(s)" in failure.sentence
    b.start()
    agent = Agent(cfg).start()
    try:
        wait_for(lambda: agent.bus.connected.is_set() and agent.bus.nodes.current[1] == b.port, 30, "on b")
    finally:
        agent.stop()


def test_status_every_s_sends_the_retained_status_again_without_a_change(tmp_path, broker):
    """For a broker whose retained copies may go stale: the agent's own status and `online` again each
    period; with the default 0, nothing but changes and connections."""
    from afn_agent.bus.client import Bus
    from afn_agent.config import BrokerConfig
    from afn_agent.ledger import Ledger

    watch = Client(broker, "fleet", client_id="watch-refresh")
    watch.subscribe("afn/v1/fablab/#")
    seen = {}
    for every in (1.0, 0.0):
        ledger = Ledger(tmp_path / f"agent-{every}.sqlite3", "fablab")
        cfg = BrokerConfig(port=broker.port, username="pi-printers", password=password("pi-printers"),
                           keepalive_s=5, status_every_s=every)  # fmt: skip
        before = len(watch.received("printer-1/status"))
        bus = Bus(cfg, "fablab", "pi-printers", ledger, ["printer-1"], lambda m: {"machine": m}).start()
        try:
            wait_for(bus.connected.is_set, 10, "connected")
            time.sleep(3.2)  # real time: three periods of 1 s
            seen[every] = len(watch.received("printer-1/status")) - before
        finally:
            bus.stop()
            ledger.close()
    watch.close()
    assert seen[1.0] >= 3 and seen[0.0] == 1, seen
