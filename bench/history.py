"""The fleet's job history at scale: 100,000 usage records, queried through the running dashboard over
real HTTP as the history page asks (first page, deep page by key, filters, CSV export).

    python bench/history.py [--records 100000] [--runs 40]

The records are variants of one a real ledger billed (member, machine, outcome, end time spread over a
year). Baseline in the same run: the same queries on 1,000 records, so the table shows what size costs.
Target (issue 21): first page and a filtered query under 300 ms p95 at 100,000 records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from afn_agent.config import BrokerConfig
from afn_agent.fleet.history import History
from afn_agent.fleet.service import Fleet, FleetConfig
from afn_agent.ledger import Ledger, Tariff

OUTCOMES = ("completed",) * 8 + ("cancelled", "failed")
TARIFF = Tariff.from_snapshot({"name": "printer", "per_active_minute": "0.10", "per_gram": "0.05"})
FIGURES = {
    "total_s": 600.0,
    "active_s": 480.0,
    "heating_s": 90.0,
    "paused_s": 30.0,
    "idle_s": 0.0,
    "material_per_tool": {"0": {"mm": 1000.0, "g": 2.98}},
    "material_mm": 1000.0,
    "material_g": 2.98,
    "material_kind": "PLA",
    "beam_on_s": 0.0,
    "spindle_on_s": 0.0,
    "done_fraction": 1.0,
    "lines": 1234,
}


def template(tmp: Path) -> dict:
    """One record as a real ledger bills it."""
    ledger = Ledger(tmp / "template.sqlite3", "bench")
    ledger.upsert_machine("printer-1", "fdm-printer", "marlin2")
    job = ledger.add_job(
        "printer-1", "/spool/a.gcode", "a.gcode", "ab" * 32, 1234, "bench", {"time_s": 600.0}, member_id="m-1"
    )
    ledger.transition(job, "starting", "t")
    record = ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
    ledger.close()
    return record


def variants(base: dict, n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        end = start + timedelta(seconds=rnd.randrange(365 * 86400))
        r = json.loads(json.dumps(base))
        r["record_id"] = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:32]
        r["end"] = end.isoformat().replace("+00:00", "Z")
        r["start"] = (end - timedelta(seconds=600)).isoformat().replace("+00:00", "Z")
        r["member_id"] = f"m-{rnd.randrange(2000):04d}"
        r["machine"]["id"] = f"machine-{rnd.randrange(50):02d}"
        r["job"]["id"] = f"job-{seed}-{i}"
        r["job"]["name"] = f"part-{i}.gcode"
        r["job"]["outcome"] = rnd.choice(OUTCOMES)
        out.append(r)
    return out


def dashboard(data_dir: Path, records: list[dict]) -> tuple[Fleet, urllib.request.OpenerDirector]:
    history = History(data_dir / "history.sqlite3")
    for i in range(0, len(records), 10_000):
        history.keep_many("bench", records[i : i + 10_000])
    history.close()
    broker = BrokerConfig(host="127.0.0.1", port=1, keepalive_s=10)  # no broker: the history alone
    fleet = Fleet(
        FleetConfig(
            data_dir / "fleet.toml",
            "bench",
            "127.0.0.1",
            0,
            None,
            {"max": hashlib.sha256(b"k").hexdigest()},
            broker,
            data_dir,
        )
    ).start()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    opener.open(
        urllib.request.Request(
            f"http://127.0.0.1:{fleet.port}/api/login",
            data=b'{"name":"max","key":"k"}',
            headers={"Content-Type": "application/json"},
        )
    ).read()
    return fleet, opener


def timed(opener, url: str, runs: int) -> tuple[float, float, int]:
    """p50 and p95 in ms of `runs` GETs, and the size of the last answer."""
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        with opener.open(url) as answer:
            size = len(answer.read())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.95) - 1], size


def queries(records: list[dict]) -> dict[str, str]:
    """The history page's requests, with a deep cursor (a quarter of the way down) from the data."""
    ordered = sorted(records, key=lambda r: (r["end"], r["record_id"]), reverse=True)
    deep = ordered[len(ordered) // 4]
    member = records[7]["member_id"]
    return {
        "first page": "/api/history",
        "deep page (by key)": "/api/history?"
        + urllib.parse.urlencode({"after_end": deep["end"], "after_id": deep["record_id"]}),
        "member": f"/api/history?member={member}",
        "machine + failed": "/api/history?machine=machine-07&outcome=failed",
        "one month": "/api/history?since=2026-03-01&until=2026-04-01",
        "month + machine, 100": "/api/history?since=2026-03-01&until=2026-04-01&machine=machine-07&limit=100",
        "CSV, one month": "/api/history.csv?since=2026-03-01&until=2026-04-01",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = template(Path(tmp))
        results = {}
        for label, n in (("1,000", 1000), (f"{args.records:,}", args.records)):
            records = variants(base, n)
            where = Path(tmp) / f"fleet-{n}"
            t0 = time.perf_counter()
            fleet, opener = dashboard(where, records)
            load_s = time.perf_counter() - t0
            try:
                base_url = f"http://127.0.0.1:{fleet.port}"
                results[label] = {
                    name: timed(opener, base_url + q, args.runs) for name, q in queries(records).items()
                }
                results[label]["_load_s"] = (load_s, 0, 0)
            finally:
                fleet.stop()
        small, big = results["1,000"], results[f"{args.records:,}"]
        print(
            f"fleet history over real HTTP, {args.runs} runs each (ms); load of {args.records:,} records: "
            f"{big['_load_s'][0]:.1f} s"
        )
        head = f"{args.records:>7,} p50"
        print(
            f"{'query':<24} {'1,000 p50':>10} {'p95':>7} | {head:>11} {'p95':>7} {'bytes':>9} {'ratio':>6}"
        )
        for name in small:
            if name.startswith("_"):
                continue
            s50, s95, _ = small[name]
            b50, b95, size = big[name]
            ratio = b95 / s95
            print(f"{name:<24} {s50:>10.1f} {s95:>7.1f} | {b50:>11.1f} {b95:>7.1f} {size:>9,} {ratio:>6.2f}")
        worst = max(big[q][1] for q in ("first page", "member", "machine + failed", "one month"))
        print(
            f"target: first page and filtered queries p95 < 300 ms at {args.records:,} records: "
            f"{'met' if worst < 300 else 'NOT met'} (worst {worst:.1f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
