"""A network of labs at scale: 2,000 machines in 10 labs (each lab its topic prefix and its broker user,
allowed only its own topics) publish through a 3-node NATS cluster, then through one Mosquitto, to the
fleet dashboard and two usage consumers (issue 23).

    python bench/fleet_scale.py [--machines 2000] [--labs 10] [--seconds 30] [--procs 4] [--only nats]

The agents are our Bus (retained status, coalesced telemetry, the SQLite outbox), 10 machines each,
spread over `--procs` processes: every machine sends telemetry at 1 Hz, changes state every 10 s, and
ends one billed job during the run (a usage record through the outbox). The dashboard is our Fleet in
this process: status latency is from the agent's timestamp to the dashboard's state holding it. The
consumers run in their own process: on Mosquitto an MQTT 5 shared subscription split between them; on
NATS (MQTT 3.1.1, no shared subscriptions) the labs split between them. CPU is user+sys per process
(/proc), brokers included. Exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PER_AGENT = 10
STATE_EVERY_S = 10.0
PASSWORD = "bench-password-0123"


def cpu_s(pid: int) -> float:
    """user+sys of a process so far, from /proc (the brokers are not our children's children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- brokers: per-lab users allowed only their lab's topics; the dashboard reads all, booking its part
def mosquitto(work: Path, labs: list[str]) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    from tests.broker import free_port

    port = free_port()
    users = [*labs, "fleet", "booking"]
    passwd = work / "passwd"
    passwd.write_text("".join(f"{u}:{PASSWORD}\n" for u in users))
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    acl = [f"user {lab}\ntopic readwrite afn/v1/{lab}/#\n" for lab in labs]
    acl += ["user fleet\ntopic read afn/v1/#\n",
            "user booking\ntopic read afn/v1/+/+/usage\ntopic write afn/v1/+/+/usage/ack\n"
            "topic write afn/v1/+/_consumers/+\n"]  # fmt: skip
    (work / "acl").write_text("\n".join(acl))
    conf = [f"listener {port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
            f"acl_file {work / 'acl'}", "max_queued_messages 100000", "persistence false"]  # fmt: skip
    if os.geteuid() == 0:
        conf.append("user root")
    (work / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    _wait_port(port)
    return [proc], [port]


def nats(work: Path, labs: list[str]) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """NATS maps MQTT topic levels to subject tokens (a/b -> a.b); the gateway's own subjects ($MQTT.>)
    must be open to every MQTT user (the NATS docs' MQTT permissions)."""
    from tests.nats import NatsCluster

    def user(name: str, publish: str, subscribe: str) -> str:
        allow = lambda subjects: ", ".join(f'"{s}"' for s in [*subjects.split(), "$MQTT.>"])  # noqa: E731
        rights = f"permissions: {{publish: [{allow(publish)}], subscribe: [{allow(subscribe)}]}}"
        return f'{{user: "{name}", password: "{PASSWORD}", {rights}}}'

    users = [user(lab, f"afn.v1.{lab}.>", f"afn.v1.{lab}.>") for lab in labs]
    users.append(user("fleet", "", "afn.v1.>"))
    users.append(user("booking", "afn.v1.*.*.usage.ack afn.v1.*._consumers.*", "afn.v1.*.*.usage"))
    users.append(f'{{user: "probe", password: "{PASSWORD}"}}')  # the fixture's readiness probe
    cluster = NatsCluster(work, auth="authorization { users: [\n  " + ",\n  ".join(users) + "\n] }")
    cluster.start(user="probe", password=PASSWORD)
    return [n.proc for n in cluster.nodes if n.proc is not None], [n.port for n in cluster.nodes]


def trespass(port: int, labs: list[str]) -> None:
    """Lab 0's user publishes a status in lab 1's topics: its ACL must keep it off the dashboard."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trespasser", protocol=mqtt.MQTTv311)
    c.username_pw_set(labs[0], PASSWORD)
    try:
        c.connect("127.0.0.1", port, 10)
        c.loop_start()
        payload = '{"machine": "intruder", "state": "idle"}'
        info = c.publish(f"afn/v1/{labs[1]}/intruder/status", payload, qos=1)
        info.wait_for_publish(5)
    except (OSError, RuntimeError, ValueError):
        pass  # refused outright: refused all the same
    finally:
        c.disconnect()
        c.loop_stop()


def _wait_port(port: int) -> None:
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def broker_cfg(ports: list[int], user: str, index: int, **kw: Any):
    """Each client on one node (spread by index), the others as its `nodes`, in order."""
    from afn_agent.config import BrokerConfig

    home = index % len(ports)
    order = [ports[(home + k) % len(ports)] for k in range(len(ports))]
    return BrokerConfig(host="127.0.0.1", port=order[0], nodes=tuple(f"127.0.0.1:{p}" for p in order[1:]),
                        username=user, password=PASSWORD, keepalive_s=30, **kw)  # fmt: skip


# ---- the agents' processes ---------------------------------------------------------------------------
def agents_side(ports, agents, labs, seconds, workdir, extra, out) -> None:
    """`agents`: indexes of the agents this process runs; agent a is in lab a % len(labs)."""
    from afn_agent.bus.client import Bus
    from afn_agent.ledger import Ledger
    from tests.unit.test_ledger import FIGURES, TARIFF

    buses = []
    for a in agents:
        lab = labs[a % len(labs)]
        ids = [f"m{a:03d}{k}" for k in range(PER_AGENT)]
        ledger = Ledger(Path(workdir) / f"agent{a}.sqlite3", lab)
        states: dict[str, str] = {}
        for m in ids:
            ledger.upsert_machine(m, "fdm-printer", "marlin2")
            states[m] = "idle"

        def status(machine_id: str, states=states) -> dict:
            return {"machine": machine_id, "state": states[machine_id], "t": time.time()}

        bus = Bus(broker_cfg(ports, lab, a, telemetry_hz=1.0, **extra), lab, f"agent{a}", ledger, ids, status)
        buses.append((bus.start(), ledger, ids, states))
    for bus, *_ in buses:
        bus.connected.wait(60)
    cpu0, t0, billed, tick = time.process_time(), time.monotonic(), 0, 0
    published0 = sum(b.published for b, *_ in buses)
    while (elapsed := time.monotonic() - t0) < seconds:
        tick += 1
        for n, (bus, ledger, ids, states) in enumerate(buses):
            for k, m in enumerate(ids):
                bus.telemetry(m, {"temperatures": {"T": [210.0, 210.0]}, "progress": 0.5, "t": time.time()})
                phase = (n * PER_AGENT + k) % int(STATE_EVERY_S * 5)
                if tick % int(STATE_EVERY_S * 5) == phase:
                    states[m] = "printing" if states[m] == "idle" else "idle"
                    bus.status_changed(m)
                if tick == 1 + (n * PER_AGENT + k) % int(seconds * 4):  # one job per machine, spread out
                    job = ledger.add_job(m, "/spool/a.gcode", "part.gcode", "ab" * 32, 1234, "bench",
                                         {"time_s": 600.0}, member_id=f"m-{k}")  # fmt: skip
                    ledger.transition(job, "starting", "bench")
                    ledger.transition(job, "running", "bench")
                    ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
                    bus.wake()
                    billed += 1
        time.sleep(max(0.0, t0 + tick * 0.2 - time.monotonic()))
    deadline = time.monotonic() + 60  # the records' acknowledgements
    while time.monotonic() < deadline and sum(led.outbox_pending() for _, led, _, _ in buses):
        time.sleep(0.5)
    cpu = time.process_time() - cpu0
    out.send({"cpu_s": cpu, "seconds": elapsed, "billed": billed,
              "published": sum(b.published for b, *_ in buses) - published0,
              "pending": sum(led.outbox_pending() for _, led, _, _ in buses),
              "undelivered": sum(led.undelivered() for _, led, _, _ in buses)})  # fmt: skip
    for bus, ledger, _, _ in buses:
        bus.stop()
        ledger.close()


def consumers_side(ports, labs, v5: bool, workdir, extra, out, stop) -> None:
    from afn_agent.booking.usage_consumer import UsageConsumer, UsageStore

    store = UsageStore(Path(workdir) / "booking.sqlite3")
    parts = [labs, labs] if v5 else [labs[0::2], labs[1::2]]  # shared subscription, or labs split
    cs = [UsageConsumer(broker_cfg(ports, "booking", i + 1, protocol="5" if v5 else "3.1.1", **extra),
                        part, store, f"c{i}").start() for i, part in enumerate(parts)]  # fmt: skip
    cpu0 = time.process_time()
    stop.wait()
    out.send({"cpu_s": time.process_time() - cpu0, "received": [c.received for c in cs],
              "kept": store.count()})  # fmt: skip
    for c in cs:
        c.stop()


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from afn_agent.fleet.service import Fleet, FleetConfig

    work = Path(tempfile.mkdtemp(prefix=f"afn-fleet-scale-{kind}-"))
    labs = [f"lab{k:02d}" for k in range(args.labs)]
    procs, ports = (nats if kind == "nats" else mosquitto)(work, labs)
    extra: dict[str, Any] = {"session": "clean"} if kind == "nats" else {}
    latencies: list[float] = []
    lock = threading.Lock()
    try:
        fleet = Fleet(FleetConfig(work / "fleet.toml", labs[0], "127.0.0.1", 0, None, {},
                                  broker_cfg(ports, "fleet", 0, **extra), labs=tuple(labs[1:])))  # fmt: skip
        inner = fleet.client.on_message

        arrived = [0]

        def timed(client, userdata, msg) -> None:
            inner(client, userdata, msg)
            arrived[0] += 1
            if msg.topic.endswith("/status") and not msg.retain:
                import json

                t = json.loads(msg.payload).get("t")
                if t:
                    with lock:
                        latencies.append(time.time() - t)

        fleet.client.on_message = timed
        fleet.start()
        trespass(ports[-1], labs)
        stop = mp.Event()
        here, there = mp.Pipe()
        cons = mp.Process(target=consumers_side,
                          args=(ports, labs, kind != "nats", str(work), extra, there, stop))  # fmt: skip
        cons.start()
        time.sleep(2)
        agents = -(-args.machines // PER_AGENT)
        pipes, children = [], []
        for p in range(args.procs):
            mine = list(range(p, agents, args.procs))
            a, b = mp.Pipe()
            agent_extra = {**extra, "status_every_s": 30.0} if kind == "nats" else {}  # docs/mqtt.md
            work_args = (ports, mine, labs, args.seconds, str(work), agent_extra, b)
            child = mp.Process(target=agents_side, args=work_args)
            child.start()
            pipes.append(a)
            children.append(child)
        broker0 = sum(cpu_s(p.pid) for p in procs)
        fleet0 = time.process_time()
        results = [a.recv() for a in pipes]
        broker_cpu = sum(cpu_s(p.pid) for p in procs) - broker0
        fleet_cpu = time.process_time() - fleet0
        for child in children:
            child.join()
        stop.set()
        booked = here.recv()
        cons.join()
        machines_seen = len(fleet.state.machines)
        intruded = any("intruder" in key for key in fleet.state.machines)
        fleet.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    seconds = max(r["seconds"] for r in results)
    lat = sorted(latencies)
    pick = lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000 if lat else float("nan")  # noqa: E731
    return {
        "published": sum(r["published"] for r in results), "seconds": seconds,
        "arrived": arrived[0], "intruded": intruded,
        "p50": pick(0.5), "p99": pick(0.99), "statuses": len(lat), "machines_seen": machines_seen,
        "agent_cpu": sum(r["cpu_s"] for r in results), "broker_cpu": broker_cpu, "fleet_cpu": fleet_cpu,
        "consumer_cpu": booked["cpu_s"], "billed": sum(r["billed"] for r in results),
        "kept": booked["kept"], "received": booked["received"],
        "pending": sum(r["pending"] for r in results), "undelivered": sum(r["undelivered"] for r in results),
        "nodes": len(ports),
    }  # fmt: skip


def per_k(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.1f} / {r[key] / max(r['published'], 1) * 1000:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", type=int, default=2000)
    ap.add_argument("--labs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--procs", type=int, default=4, help="processes the agents are spread over")
    ap.add_argument("--only", choices=("nats", "mosquitto"))
    args = ap.parse_args()
    kinds = [k for k in ("nats", "mosquitto") if args.only in (None, k)]
    missing = [exe for exe in ("nats-server", "mosquitto") if not shutil.which(exe)]
    if missing:
        print(f"{', '.join(missing)} not installed (deploy/dev-setup.sh installs them)")
        return 0
    rows = {k: run(k, args) for k in kinds}
    cmd = " ".join(["python", "bench/fleet_scale.py", *sys.argv[1:]])
    print(f"# Fleet at network scale\n\n`{cmd}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores; {args.machines} machines in {args.labs} labs, {PER_AGENT} per agent, "
          f"{args.procs} agent processes, {args.seconds:g} s\n")  # fmt: skip
    names = {"nats": "NATS 3 nodes (MQTT 3.1.1, clean sessions)", "mosquitto": "one Mosquitto (MQTT 5)"}
    print("| | " + " | ".join(names[k] for k in rows) + " |")
    print("|---|" + "---|" * len(rows))
    lines = [
        ("messages published / s", lambda r: f"{r['published'] / r['seconds']:.0f}"),
        ("messages at the dashboard / s (acks too)", lambda r: f"{r['arrived'] / r['seconds']:.0f}"),
        ("lab 0's user writing in lab 1's topics", lambda r: "arrived!" if r["intruded"] else "refused"),
        ("status latency at the dashboard p50 / p99 (ms)", lambda r: f"{r['p50']:.0f} / {r['p99']:.0f}"),
        ("statuses timed / machines on the dashboard", lambda r: f"{r['statuses']} / {r['machines_seen']}"),
        ("broker CPU (s, all nodes) / per 1,000 messages", lambda r: per_k(r, "broker_cpu")),
        ("agents' CPU (s) / per 1,000 messages", lambda r: per_k(r, "agent_cpu")),
        ("dashboard / consumers' CPU (s)", lambda r: f"{r['fleet_cpu']:.1f} / {r['consumer_cpu']:.1f}"),
        ("usage records billed / kept by id", lambda r: f"{r['billed']} / {r['kept']}"),
        ("records received per consumer", lambda r: " + ".join(str(n) for n in r["received"])),
        ("outbox rows left / records unacknowledged", lambda r: f"{r['pending']} / {r['undelivered']}"),
    ]
    for name, cell in lines:
        print(f"| {name} | " + " | ".join(cell(r) for r in rows.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
