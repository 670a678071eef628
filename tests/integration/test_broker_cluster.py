"""A network of labs on a real clustered broker: three NATS nodes (JetStream, MQTT gateway, everything
replicated three times), ten agents with a simulated printer each, the booking side's usage consumer and
the fleet dashboard, each on its own node with the others as `[broker] nodes`. Fifty jobs run while one
node is killed (SIGKILL) and restarted, then another: every usage record is kept once by id and
acknowledged, the dashboard's retained view is right after each switch, a killed agent's will fires."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afn_agent.agent import Agent
from afn_agent.booking.usage_consumer import UsageConsumer, UsageStore
from afn_agent.config import BrokerConfig, load_config
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for, write_config
from tests.nats import NatsCluster

AGENTS = 10
ROUNDS = 5  # a job per agent per round: 50 jobs


@pytest.fixture
def cluster(tmp_path):
    c = NatsCluster(tmp_path / "nats").start()
    yield c
    c.stop()


def others(cluster: NatsCluster, home: int) -> list[str]:
    """The cluster's other nodes, in order after `home`: where a client goes when its node dies."""
    n = len(cluster.nodes)
    return [f"127.0.0.1:{cluster.nodes[(home + k) % n].port}" for k in range(1, n)]


def agent_config(tmp_path: Path, cluster: NatsCluster, i: int, sim, home: int) -> Path:
    d = tmp_path / f"agent-{i}"
    d.mkdir()
    machine = {"id": f"p{i}", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}  # fmt: skip
    broker = {"host": "127.0.0.1", "port": cluster.nodes[home].port, "nodes": others(cluster, home),
              "keepalive_s": 5, "session": "clean", "status_every_s": 30}  # fmt: skip
    return write_config(d / "agent.toml", [machine], agent_id=f"pi-{i}", broker=broker)


def watcher(cluster: NatsCluster, home: int):
    """A plain MQTT 3.1.1 client on one node: what a person with mosquitto_sub would see."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    seen: list[tuple[str, bytes, bool]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv311)
    c.on_connect = lambda client, *a: client.subscribe("afn/v1/fablab/_agents/#", 0)
    c.on_message = lambda client, userdata, msg: seen.append((msg.topic, bytes(msg.payload), msg.retain))
    c.connect("127.0.0.1", cluster.nodes[home].port, 5)
    c.loop_start()
    return c, seen


def test_fifty_jobs_while_two_nodes_die_in_turn(tmp_path, cluster, start_sim):
    sims = [start_sim("marlin", speed=10) for _ in range(AGENTS + 1)]
    configs = [agent_config(tmp_path, cluster, i, sims[i], home=i % 2) for i in range(AGENTS)]
    agents = [Agent(load_config(c)).start() for c in configs]
    store = UsageStore(tmp_path / "usage.sqlite3")
    booking = BrokerConfig(port=cluster.nodes[2].port, nodes=tuple(others(cluster, 2)), protocol="3.1.1",
                           keepalive_s=5, session="clean")  # fmt: skip
    consumer = UsageConsumer(booking, ["fablab"], store, "booking").start()
    fleet = Fleet(FleetConfig(tmp_path / "fleet.toml", "fablab", "127.0.0.1", 0, None, {},
                              BrokerConfig(port=cluster.nodes[0].port, nodes=tuple(others(cluster, 0)),
                                           keepalive_s=5, session="clean"))).start()  # fmt: skip
    # one more agent in its own process, on node 2, to be killed: its will must come from the cluster
    doomed_cfg = agent_config(tmp_path, cluster, AGENTS, sims[AGENTS], home=1)
    with open(tmp_path / "doomed.log", "wb") as log:
        doomed = subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(doomed_cfg)],
                                  stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    watch, seen = watcher(cluster, 1)
    job = circle_gcode(tmp_path / "job.gcode", 40, 0.5, centre=(110, 110))
    machines = [f"p{i}" for i in range(AGENTS)]

    def dashboard_right(why: str) -> None:
        """Every machine idle on the dashboard, its agent online: rebuilt from retained status."""
        def right() -> bool:
            ms = fleet.state.machines
            return fleet.connected.is_set() and all(ms.get(m, {}).get("state") == "idle" for m in machines)
        try:
            wait_for(right, 60, f"the dashboard's retained view {why}")
        except AssertionError:
            ms = fleet.state.machines
            print("dashboard", fleet.connected.is_set(), fleet.nodes.current,
                  {m: (ms.get(m, {}).get("state"), a.machines[m].state.value, a.bus.nodes.current[1])
                   for a, m in zip(agents, machines, strict=True)})  # fmt: skip
            raise

    def will_of(agent: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in seen if t.endswith(f"/_agents/{agent}")]

    try:
        for a in agents:
            assert a.machines[next(iter(a.machines))].wait_ready(20)
        wait_for(lambda: all(a.bus.connected.is_set() for a in agents), 30, "every agent connected")
        wait_for(consumer.connected.is_set, 20, "the consumer connected")
        wait_for(lambda: any(s.get("state") == "online" for s in will_of(f"pi-{AGENTS}")), 30,
                 "the doomed agent online")  # fmt: skip
        dashboard_right("at the start")
        events = {
            1: ("kill", 0),  # node 1: half the agents and the dashboard move
            2: ("start", 0),  # and the doomed agent dies
            3: ("kill", 2),  # node 3: the consumer moves
            4: ("start", 2),
        }
        switches: list[str] = []
        for r in range(ROUNDS):
            for a, m in zip(agents, machines, strict=True):
                submit(a.config, a.ledger, m, str(job), "test", member_id=f"m-{r}", held=False)
            if r in events:
                what, n = events[r]
                node = cluster.nodes[n]
                t0 = time.monotonic()
                if what == "kill":
                    node.kill()
                else:
                    node.start()
                    cluster.ready()
                if r == 2:
                    doomed.send_signal(signal.SIGKILL)
                    doomed.wait(10)
                switches.append(f"{what} {node.name} at round {r}")
                if what == "kill":
                    wait_for(lambda dead=node.port: all(a.bus.connected.is_set() and a.bus.nodes.current[1] != dead
                                                        for a in agents), 90, f"every agent off {node.name}")  # fmt: skip
                    print(f"{node.name} killed: every agent on another node {time.monotonic() - t0:.1f} s later")
            for a, m in zip(agents, machines, strict=True):
                assert a.wait_idle(m, 120), f"{m} did not finish round {r}"
            dashboard_right(f"after round {r} ({switches[-1] if switches else 'no switch yet'})")
        started = time.monotonic()
        try:
            wait_for(lambda: all(a.ledger.undelivered() == 0 for a in agents), 180,
                     "every usage record acknowledged")  # fmt: skip
        except AssertionError:
            for a in agents:
                rows = a.ledger.conn.execute("SELECT record_id, attempts, next_try - strftime('%s','now') "
                                             "FROM outbox WHERE acked_at IS NULL").fetchall()  # fmt: skip
                print(a.bus.agent_id, a.bus.connected.is_set(), a.bus.nodes.current, [tuple(r) for r in rows])
            print("consumer", consumer.connected.is_set(), consumer.nodes.current, consumer.received)
            raise
        print(f"last acknowledgement {time.monotonic() - started:.1f} s after the last job")
        billed = sorted(r for a in agents for r in record_ids(a))
        assert len(billed) == AGENTS * ROUNDS == len(set(billed))
        kept = [row[0] for row in store.conn.execute("SELECT record_id FROM usage ORDER BY record_id")]
        assert kept == billed, "every record kept once by id, and nothing else"
        wait_for(lambda: all(a.ledger.outbox_pending() == 0 for a in agents), 30,
                 "nothing left in any outbox (the events' PUBACKs too)")  # fmt: skip
        wait_for(lambda: any(s.get("state") == "offline" for s in will_of(f"pi-{AGENTS}")), 30,
                 "the killed agent's will")  # fmt: skip
        wait_for(lambda: fleet.state.agents.get(f"pi-{AGENTS}", {}).get("state") == "offline", 30,
                 "the dashboard showing the killed agent offline")  # fmt: skip
        print(f"{consumer.received} records received for {len(kept)} kept (repeats absorbed by id); "
              f"switches: {', '.join(switches)}")
    finally:
        for a in agents:
            a.stop()
        consumer.stop()
        fleet.stop()
        watch.loop_stop()
        if doomed.poll() is None:
            doomed.kill()


def record_ids(agent: Agent) -> list[str]:
    return [r[0] for r in agent.ledger.conn.execute("SELECT id FROM usage_records")]
