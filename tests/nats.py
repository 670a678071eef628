"""A real 3-node NATS cluster for tests: Debian's nats-server with JetStream and its MQTT gateway, each
node on its own loopback ports, killed (SIGKILL) and restarted on the same ports and store.

The MQTT gateway keeps sessions, QoS 1 messages and retained messages in JetStream streams; with
`stream_replicas` and `consumer_replicas` at 3, every node holds a copy, so one node may die.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.broker import free_port, wait_listening
from tests.helpers import wait_for

NATS = "nats-server"


class NatsNode:
    """One nats-server process: client, cluster, MQTT and monitoring ports on 127.0.0.1."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.dir, self.name = workdir, name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "nats.conf"
        self.new_ports()

    def new_ports(self) -> None:
        """Four ports free now; another process may take one before the node binds it (start retries)."""
        self.client_port, self.cluster_port = free_port(), free_port()
        self.port, self.http_port = free_port(), free_port()  # `port` is MQTT's, as on tests.broker.Broker

    def write_conf(self, peers: list[NatsNode], auth: str = "") -> None:
        routes = ", ".join(f'"nats-route://127.0.0.1:{p.cluster_port}"' for p in peers if p is not self)
        self.conf.write_text(f"""
server_name: {self.name}
listen: 127.0.0.1:{self.client_port}
http: 127.0.0.1:{self.http_port}
jetstream {{ store_dir: "{self.dir / 'js'}", max_memory_store: 67108864, max_file_store: 1073741824 }}
cluster {{ name: afn, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{self.port}, stream_replicas: 3, consumer_replicas: 3, ack_wait: "5s" }}
{auth}
""")

    def start(self) -> NatsNode:
        log = open(self.dir / "nats.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen([NATS, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_listening(self.proc, self.port, 15, f"nats-server {self.name}", self.log)
        return self

    def kill(self) -> None:
        """Dies as a crashed or unplugged node does: no goodbye to its clients or peers."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def jsz(self) -> dict:
        """The node's JetStream report (monitoring port): its view of the meta leader and peers."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz", timeout=2) as r:
            return json.loads(r.read())

    def log(self) -> str:
        path = self.dir / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _takes_a_message(port: int, login: tuple[str, str] | None) -> bool:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}", protocol=mqtt.MQTTv311)
    if login:
        c.username_pw_set(*login)
    try:
        c.connect("127.0.0.1", port, 5)
        c.loop_start()
        info = c.publish("afn-probe", b"1", qos=1)
        info.wait_for_publish(5)
        return info.is_published()
    except (OSError, RuntimeError, ValueError):
        return False
    finally:
        c.disconnect()
        c.loop_stop()


class NatsCluster:
    """Three nodes routed to each other; `ready()` waits until JetStream has a leader."""

    def __init__(self, workdir: Path, size: int = 3, auth: str = "") -> None:
        """`auth`: an `authorization { ... }` block for every node (users and their permissions)."""
        if not shutil.which(NATS):
            pytest.fail("nats-server is not installed (deploy/dev-setup.sh installs it)")
        self.nodes = [NatsNode(workdir / f"n{i + 1}", f"n{i + 1}") for i in range(size)]
        self.auth = auth
        for n in self.nodes:
            n.write_conf(self.nodes, auth)
        self.probe: tuple[str, str] | None = None

    def start(self, user: str | None = None, password: str | None = None) -> NatsCluster:
        """`user`, `password`: what the readiness probe signs in as when `auth` is set."""
        self.probe = (user, password or "") if user else None
        for attempt in range(3):
            try:
                for n in self.nodes:
                    n.start()
                break
            except RuntimeError as exc:  # a port taken between choosing it and binding it (a CI run)
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                for n in self.nodes:
                    n.stop()
                    n.new_ports()
                for n in self.nodes:
                    n.write_conf(self.nodes, self.auth)
        self.ready()
        return self

    def ready(self, timeout: float = 60) -> None:
        """Every live node takes an MQTT client and a QoS 1 message: JetStream has its leaders and the
        gateway's streams exist (a client that comes sooner is refused: `timeout for request`)."""
        for n in self.nodes:
            wait_for(lambda n=n: not n.alive or _takes_a_message(n.port, self.probe), timeout,
                     f"NATS node {n.name} taking an MQTT message")  # fmt: skip

    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
