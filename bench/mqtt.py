"""MQTT fleet benchmark: N machines' agents publishing through one Mosquitto, watched by one dashboard.

    python bench/mqtt.py [--machines 200] [--per-agent 10] [--seconds 20]

The agents' side (our Bus: retained status, coalesced telemetry, events through the SQLite outbox) runs
in a child process so its CPU time is its own; a subscriber in this process measures status latency
(publish-side timestamp to arrival). Baseline in the same run: a bare paho client publishing the same
number of messages of the same sizes, to express our CPU per message as a ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from afn_agent.demo import start_broker

SITE = "bench"


def agents_side(port: int, machines: int, per_agent: int, seconds: float, workdir: str, out) -> None:
    """Run the agents: every machine changes status at 1 Hz, offers telemetry at 5 Hz (sent at 1 Hz),
    and queues an event every 10 s through its ledger's outbox."""
    from afn_agent.bus.client import Bus
    from afn_agent.config import BrokerConfig
    from afn_agent.ledger import Ledger

    cfg = BrokerConfig(host="127.0.0.1", port=port, telemetry_hz=1.0, keepalive_s=30)
    buses = []
    for a in range(0, machines, per_agent):
        ids = [f"m{n:04d}" for n in range(a, min(a + per_agent, machines))]
        ledger = Ledger(Path(workdir) / f"agent{a}.sqlite3", SITE)
        for m in ids:
            ledger.upsert_machine(m, "fdm-printer", "marlin2")

        def status(machine_id: str) -> dict:
            return {"machine": machine_id, "state": "printing", "job": {"progress": 0.5}, "t": time.time()}

        buses.append((Bus(cfg, SITE, f"agent{a}", ledger, ids, status).start(), ledger, ids))
    for bus, _, _ in buses:
        bus.connected.wait(20)
    cpu0, t0 = time.process_time(), time.monotonic()
    published0 = sum(b.published for b, _, _ in buses)
    tick = 0
    while time.monotonic() - t0 < seconds:
        tick += 1
        for bus, ledger, ids in buses:
            for i, m in enumerate(ids):
                bus.telemetry(m, {"temperatures": {"T": [210.0, 210.0]}, "progress": 0.5, "t": time.time()})
                if tick % 5 == i % 5:
                    bus.status_changed(m)
                if tick % 50 == i % 50:
                    ledger.outbox_add("event", m, {"type": "warning", "text": "bench", "t": time.time()})
                    bus.wake()
        time.sleep(max(0.0, t0 + tick * 0.2 - time.monotonic()))
    time.sleep(1.0)  # let the last messages out
    cpu = time.process_time() - cpu0
    published = sum(b.published for b, _, _ in buses) - published0
    pending = sum(ledger.outbox_pending() for _, ledger, _ in buses)
    for bus, ledger, _ in buses:
        bus.stop()
        ledger.close()
    out.send({"cpu_s": cpu, "published": published, "seconds": time.monotonic() - t0, "pending": pending})


def baseline_side(port: int, count: int, out) -> None:
    """The same number of messages from one bare paho client: the cost of MQTT itself."""
    payload = json.dumps(
        {"machine": "m0000", "state": "printing", "job": {"progress": 0.5}, "t": time.time()}
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="baseline")
    client.connect("127.0.0.1", port)
    client.loop_start()
    cpu0 = time.process_time()
    for n in range(count):
        info = client.publish(f"afn/v1/base/m{n % 200:04d}/status", payload, qos=1, retain=True)
        if n % 1000 == 999:
            info.wait_for_publish(10)
    info.wait_for_publish(10)
    out.send({"cpu_s": time.process_time() - cpu0, "published": count})
    client.disconnect()
    client.loop_stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", type=int, default=200)
    ap.add_argument("--per-agent", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    if not shutil.which("mosquitto"):
        print("mosquitto not installed (deploy/dev-setup.sh installs it)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="afn-bench-mqtt-"))
    broker, port = start_broker(work)
    latencies: list[float] = []
    received = {"status": 0, "telemetry": 0, "events": 0}
    lock = threading.Lock()

    def on_message(client, userdata, msg) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        if leaf not in received:
            return
        now = time.time()
        with lock:
            received[leaf] += 1
            if leaf == "status" and not msg.retain:
                latencies.append(now - json.loads(msg.payload)["t"])

    fleet = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet")
    fleet.on_message = on_message
    fleet.connect("127.0.0.1", port)
    fleet.subscribe(f"afn/v1/{SITE}/#", 1)
    fleet.loop_start()
    try:
        here, there = mp.Pipe()
        child = mp.Process(
            target=agents_side, args=(port, args.machines, args.per_agent, args.seconds, str(work), there)
        )
        child.start()
        ours = here.recv()
        child.join()
        with lock:
            got, lat = dict(received), sorted(latencies)
        child = mp.Process(target=baseline_side, args=(port, ours["published"], there))
        child.start()
        base = here.recv()
        child.join()
    finally:
        fleet.loop_stop()
        broker.terminate()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)
    ours_us = ours["cpu_s"] / max(ours["published"], 1) * 1e6
    base_us = base["cpu_s"] / max(base["published"], 1) * 1e6
    p = lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000 if lat else float("nan")  # noqa: E731
    rows = [
        ("machines / agents", f"{args.machines} / {-(-args.machines // args.per_agent)}"),
        ("seconds", f"{ours['seconds']:.1f}"),
        ("messages published / s", f"{ours['published'] / ours['seconds']:.0f}"),
        ("received by the dashboard / s", f"{sum(got.values()) / ours['seconds']:.0f}"),
        ("  status / telemetry / events", f"{got['status']} / {got['telemetry']} / {got['events']}"),
        ("status latency p50 / p99 (ms)", f"{p(0.5):.1f} / {p(0.99):.1f}"),
        ("agent CPU per message (us)", f"{ours_us:.0f}"),
        ("bare paho CPU per message (us)", f"{base_us:.0f}"),
        ("ratio ours / bare paho", f"{ours_us / base_us:.2f}"),
        ("outbox rows left unsent", f"{ours['pending']}"),
        ("agent CPU share of one core", f"{ours['cpu_s'] / ours['seconds'] * 100:.0f}%"),
    ]
    width = max(len(r[0]) for r in rows)
    print("MQTT fleet benchmark (one Mosquitto, loopback)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
