"""Soak: 8 simulated machines running two hours of jobs (machine time, by the analyzer's estimate),
compressed by the simulators' speed-up, through one agent process, a real Mosquitto and a booking
system that acknowledges every record. Faults are injected all along: 0.5 % corrupted lines and lost
oks on every link, and a broker restart halfway.

    python bench/soak.py [--machines 8] [--hours 2]

Prints a table (docs/reliability.md): jobs, machine hours, records expected vs received, duplicates,
RSS and open files of the agent at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afn_agent.agent import open_ledger  # noqa: E402
from afn_agent.config import load_config  # noqa: E402
from afn_agent.demo import start_broker  # noqa: E402
from afn_agent.intake import submit  # noqa: E402
from afn_agent.sim.run import SimProcess  # noqa: E402


def raster(path: Path, lines: int) -> Path:
    """A job of 5 mm extruding moves at 3000 mm/min zigzagging over the bed: ~0.1 s of machine time a line."""
    out = ["G21", "G90", "M83", "G92 E0", "G1 X20 Y20 F3000"]
    for n in range(lines):
        row, step = divmod(n, 36)
        x = 20 + (step if row % 2 == 0 else 36 - step) * 5
        out.append(f"G1 X{x} Y{20 + row * 0.4:.2f} E0.17")
    path.write_text("\n".join(out) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", type=int, default=8)
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    if not shutil.which("mosquitto"):
        print("mosquitto is not installed (deploy/dev-setup.sh installs it)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="afn-soak-"))
    broker, port = start_broker(work)
    sims, machines = [], []
    for n in range(args.machines):
        sim = SimProcess("marlin", work / f"sim{n}", baud=250000, speed=50, move_ms=1.0, corrupt=0.005,
                         lost_ok=0.005, seed=n + 1)  # fmt: skip
        sim.dir.mkdir()
        sims.append(sim.start())
        head = f'[[machines]]\nid = "m{n}"\nclass = "fdm-printer"\nprofile = "marlin2"\nport = "{sim.link}"\n'
        machines.append(head + 'baud = 250000\ntariff = "printer"\nhold_uploads = false\n')
    config = work / "agent.toml"
    config.write_text(f'[agent]\nsite = "soak"\nid = "soak"\ndata_dir = "{work / "data"}"\n\n'
                      '[tariffs.printer]\nper_active_minute = 0.05\nper_gram = 0.04\nminimum = 0.5\n\n'
                      + "\n".join(machines) + f'\n[broker]\nhost = "127.0.0.1"\nport = {port}\n')  # fmt: skip
    cfg = load_config(config)
    ledger = open_ledger(cfg)
    job = raster(work / "job.gcode", 1500)
    _, quote = submit(cfg, ledger, "m0", job, "cli")
    per_job_s = quote["time_s"]
    jobs_per_machine = max(1, round(args.hours * 3600 / per_job_s))
    for n in range(args.machines):
        for _ in range(jobs_per_machine - (1 if n == 0 else 0)):
            submit(cfg, ledger, f"m{n}", job, "cli")
    total_jobs = len(ledger.jobs())

    received: dict[str, int] = {}
    booking = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-booking", clean_session=False)

    def on_message(client, userdata, msg):
        record = json.loads(msg.payload)
        received[record["record_id"]] = received.get(record["record_id"], 0) + 1
        client.publish(msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1)

    booking.on_message = on_message
    booking.on_connect = lambda c, *a: c.subscribe("afn/v1/soak/+/usage", 1)
    booking.reconnect_delay_set(0.2, 2)
    booking.connect("127.0.0.1", port)
    booking.loop_start()
    agent = subprocess.Popen([sys.executable, "-m", "afn_agent", "run", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=(work / "agent.log").open("w"))  # fmt: skip
    proc = psutil.Process(agent.pid)
    t0 = time.monotonic()
    time.sleep(5.0)
    rss0, fds0 = proc.memory_info().rss, proc.num_fds()
    restarted = False
    ended = ("completed", "cancelled", "failed", "interrupted")
    while True:
        done = sum(j["state"] in ended for j in ledger.jobs())
        if not restarted and done >= total_jobs // 2:
            broker.terminate()
            broker.wait(10)
            time.sleep(3.0)
            broker = subprocess.Popen(
                ["mosquitto", "-c", str(work / "mosquitto.conf")], stderr=subprocess.DEVNULL
            )
            restarted = True
        if done == total_jobs and ledger.undelivered() == 0:
            break
        if time.monotonic() - t0 > 3600:
            print("soak: did not finish within an hour")
            break
        time.sleep(1.0)
    wall = time.monotonic() - t0
    rss1, fds1 = proc.memory_info().rss, proc.num_fds()
    agent.terminate()
    agent.wait(30)
    booking.loop_stop()
    broker.terminate()
    stats = [s.stop() for s in sims]
    records = [r for _, r in ledger.usage_after(0, 100_000)]
    outcomes = {o: sum(r["job"]["outcome"] == o for r in records) for o in ended}
    machine_h = sum(r["estimate"]["time_s"] for r in records) / 3600
    rows = [
        ("machines", args.machines),
        ("jobs queued / ended", f"{total_jobs} / {len(records)}"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in outcomes.items() if v)),
        (
            "machine time run (analyzer estimate)",
            f"{machine_h:.1f} h ({machine_h / args.machines:.2f} h per machine)",
        ),
        ("wall time", f"{wall / 60:.1f} min"),
        (
            "faults injected",
            f"{sum(s.get('lines_corrupted', 0) for s in stats)} corrupted lines, "
            f"{sum(s.get('oks_lost', 0) for s in stats)} lost oks, 1 broker restart",
        ),
        ("records expected / received by the booking system", f"{len(records)} / {len(received)}"),
        ("records received more than once (same id)", sum(1 for v in received.values() if v > 1)),
        ("records not acknowledged at the end", ledger.undelivered()),
        ("one record per job", len({r["job"]["id"] for r in records}) == len(records) == total_jobs),
        ("agent RSS start / end", f"{rss0 / 1e6:.1f} MB / {rss1 / 1e6:.1f} MB"),
        ("agent open files start / end", f"{fds0} / {fds1}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"Soak ({args.machines} machines, {args.hours:g} h of jobs each, work dir {work})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
