"""Hardening figures (issue 15): a real agent process under the attacks that once broke it.

    python bench/hardening.py [--uploads 10] [--upload-mb 19] [--idle 1100]

One `afn-agent run` child process (a simulated Marlin, the shipped broker settings on a real Mosquitto,
LimitNOFILE as the unit sets it), then:
  * /health latency alone (baseline), and during N concurrent large uploads (ratio to the baseline);
  * N idle or trickling connections from other loopback addresses: how many the agent holds, the fds
    its process uses against its limit, /health latency meanwhile, and when they are all gone;
  * RSS of the agent before and after 50 MB MQTT payloads on a topic it reads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afn_agent.sim.jobs import circle_gcode  # noqa: E402
from afn_agent.sim.run import SimProcess  # noqa: E402
from tests.broker import Broker, password  # noqa: E402

KEY = "bench-manager-key-0123456789"
NOFILE = 4096  # deploy/systemd/afn-agent.service LimitNOFILE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(work: Path, sim: SimProcess, broker: Broker, port: int) -> Path:
    path = work / "agent.toml"
    path.write_text(f"""
[agent]
site = "fablab"
id = "pi-printers"
data_dir = "{work / "data"}"

[tariffs.printer]
currency = "EUR"
per_active_minute = 0.10

[[machines]]
id = "printer-1"
class = "fdm-printer"
profile = "marlin2"
port = "{sim.link}"
baud = {sim.options["baud"]}
tariff = "printer"

[broker]
host = "127.0.0.1"
port = {broker.port}
username = "pi-printers"
password = "{password("pi-printers")}"

[api]
host = "127.0.0.1"
port = {port}
max_upload_mb = 50

[[api.keys]]
name = "bench"
role = "manager"
sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
""")
    return path


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def health_times(url: str, until, pause: float = 0.02) -> list[float]:
    out = []
    while until():
        t0 = time.monotonic()
        requests.get(f"{url}/health", timeout=30)
        out.append(time.monotonic() - t0)
        time.sleep(pause)
    return out


def proc_status(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{key}:")[1].split()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=10)
    ap.add_argument("--upload-mb", type=int, default=19)
    ap.add_argument("--idle", type=int, default=1100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="afn-hardening-"))
    broker = Broker(work / "broker").start()
    sim = SimProcess("marlin", work / "sim", baud=250000, speed=10, move_ms=0.5)
    (work / "sim").mkdir()
    sim.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        "prlimit",
        f"--nofile={NOFILE}:{NOFILE}",
        sys.executable,
        "-m",
        "afn_agent",
        "run",
        "--config",
        str(config(work, sim, broker, port)),
    ]
    log = (work / "agent.log").open("wb")  # open for the child process's whole life
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    rows: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=1).json()["machines"]["printer-1"] == "idle":
                    break
            except (requests.RequestException, KeyError):
                pass
            time.sleep(0.2)
        pid = agent.pid  # prlimit execs the agent: same process

        n = [0]
        base = health_times(url, lambda: n.__setitem__(0, n[0] + 1) or n[0] <= 200, 0.0)
        rows.append(("/health alone: p50 / p99", f"{pct(base, 0.5):.1f} / {pct(base, 0.99):.1f} ms"))

        job = circle_gcode(work / "job.gcode", 3000, 0.05, centre=(110, 110))

        def post_job(path: Path, timeout: float) -> requests.Response:
            with open(path, "rb") as f:
                form = {"machine": "printer-1"}
                return requests.post(f"{url}/v1/jobs", headers={"X-Api-Key": KEY}, data=form,
                                     files={"file": (path.name, f)}, timeout=timeout)  # fmt: skip

        def print_once() -> float:
            """Upload, start and wait for a small print; its time on the machine (the record's time_s)."""
            job_id = post_job(job, 60).json()["id"]
            requests.post(f"{url}/v1/jobs/{job_id}/start", headers={"X-Api-Key": KEY}, timeout=60)
            state = ""
            while state != "completed":
                time.sleep(0.1)
                state = requests.get(
                    f"{url}/v1/jobs/{job_id}", headers={"X-Api-Key": KEY}, timeout=60
                ).json()["state"]
            usage = requests.get(f"{url}/v1/usage", headers={"X-Api-Key": KEY}, timeout=60).json()["records"]
            return next(u["time_s"]["total_s"] for u in usage if u["job"]["id"] == job_id)

        alone_s = print_once()
        big = circle_gcode(work / "big.gcode", int(args.upload_mb * 34_500), 0.001, centre=(110, 110))
        codes: list[int] = []

        def upload() -> None:
            codes.append(post_job(big, 600).status_code)

        threads = [threading.Thread(target=upload) for _ in range(args.uploads)]
        printed: list[float] = []
        printer = threading.Thread(target=lambda: printed.append(print_once()))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        printer.start()
        during = health_times(url, lambda: any(t.is_alive() for t in threads))
        printer.join()
        wall = time.monotonic() - t0
        size = big.stat().st_size / 1e6
        rows.append(
            (
                f"{args.uploads} uploads of {size:.0f} MB at once: answers, wall time",
                f"{codes.count(201)}x201 {len(codes) - codes.count(201)} other, {wall:.1f} s",
            )
        )
        rows.append(
            (
                "a print alone / started with the uploads (record time_s)",
                f"{alone_s:.2f} / {printed[0]:.2f} s ({printed[0] / alone_s:.2f}x)",
            )
        )
        rows.append(
            (
                "/health during them: p50 / p99 / max",
                f"{pct(during, 0.5):.1f} / {pct(during, 0.99):.1f} / {max(during) * 1000:.1f} ms "
                f"(p99 {pct(during, 0.99) / pct(base, 0.99):.1f}x alone)",
            )
        )

        fds_before = len(os.listdir(f"/proc/{pid}/fd"))
        socks = []
        for i in range(args.idle):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // 100}", 0))
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", port))
                if i % 2:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers that never end
                socks.append(s)
            except OSError:
                s.close()
        time.sleep(1.0)
        fds_attack = len(os.listdir(f"/proc/{pid}/fd"))
        health = requests.get(f"{url}/health", timeout=10).json()["http"]
        t_attack = time.monotonic()
        under = health_times(url, lambda: time.monotonic() - t_attack < 3.0)
        rows.append(
            (
                f"{args.idle} idle/slow connections: held by the agent / refused",
                f"{health['open'] - 1} held (ceiling {health['ceiling']}), {health['refused']} refused",
            )
        )
        rows.append(
            (
                "agent fds: before / under attack / limit (left for machines, ledger)",
                f"{fds_before} / {fds_attack} / {NOFILE} ({NOFILE - fds_attack} left)",
            )
        )
        rows.append(("/health under attack: p50 / p99", f"{pct(under, 0.5):.1f} / {pct(under, 0.99):.1f} ms"))
        t_gone = time.monotonic()
        while (
            requests.get(f"{url}/health", timeout=10).json()["http"]["open"] > 1
            and time.monotonic() - t_gone < 60
        ):
            time.sleep(0.5)
        rows.append(("all attack connections closed after", f"{time.monotonic() - t_attack:.1f} s"))
        for s in socks:
            s.close()

        rss0 = proc_status(pid, "VmRSS") / 1024
        big_payload = work / "payload.json"
        big_payload.write_bytes(b"[" + b"1," * (25 << 20) + b"1]")
        refused = 0
        for _ in range(5):
            r = subprocess.run(
                [
                    "mosquitto_pub",
                    "-p",
                    str(broker.port),
                    "-u",
                    "booking",
                    "-P",
                    password("booking"),
                    "-q",
                    "1",
                    "-t",
                    "afn/v1/fablab/_directory/snapshot",
                    "-f",
                    str(big_payload),
                ],
                capture_output=True,
                timeout=120,
            )
            refused += r.returncode != 0 or b"rror" in r.stderr
        time.sleep(2)
        rss1 = proc_status(pid, "VmRSS") / 1024
        mqtt_up = requests.get(f"{url}/health", timeout=10).json()["mqtt"]
        rows.append(
            (
                "agent RSS before / after 5 x 50 MB MQTT payloads",
                f"{rss0:.0f} / {rss1:.0f} MB ({refused}/5 refused by the broker; mqtt up: {mqtt_up})",
            )
        )
    finally:
        agent.terminate()
        agent.wait(30)
        sim.stop()
        broker.stop()
    width = max(len(k) for k, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
