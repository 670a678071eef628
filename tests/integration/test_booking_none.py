"""A lab without a booking system (`[booking] mode = "none"`): usage records are kept, exported and
reported, awaited by nobody — never resent, `afn_usage_undelivered` 0 — and the month's statement adds up
to the ledger's own total, to the cent."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import httpx

from afn_agent.agent import Agent, open_ledger
from afn_agent.api.server import ApiServer
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.ledger.statement import month_bounds
from afn_agent.ledger.usage import iso, utc_now
from tests.broker import Client, password
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_bus import small_job
from tests.unit.test_ledger import FIGURES, TARIFF

MONTH = utc_now().astimezone().strftime("%Y-%m")


def _config(tmp_path, broker=None, sims=(), mode: str | None = None):
    machines = [{"id": f"printer-{i + 1}", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                 "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False}
                for i, sim in enumerate(sims)] or [
        {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": "/dev/null", "tariff": "printer"}]  # fmt: skip
    bus = {"host": "127.0.0.1", "port": broker.port, "username": "pi-printers",
           "password": password("pi-printers")} if broker else None  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines, broker=bus)
    extra = f'\n[booking]\nmode = "{mode}"\n' if mode else ""
    path.write_text(path.read_text() + extra + api_table())
    return path


def test_fifty_jobs_kept_never_sent_and_the_statement_adds_up(tmp_path):
    """No broker, no [booking]: mode none by default. 50 records, 3 of them last month."""
    path = _config(tmp_path)
    cfg = load_config(path)
    assert cfg.booking.mode == "none"
    ledger = open_ledger(cfg)
    last_month = iso(utc_now().astimezone().replace(day=1) - timedelta(days=2))
    for n in range(50):
        job = ledger.add_job("printer-1", "/spool/a.gcode", f"part-{n}.gcode", "ab" * 32, 1234, "test",
                             {"time_s": 600.0}, member_id=None if n % 10 == 9 else f"m-{n % 4}")  # fmt: skip
        ledger.transition(job, "starting", "test")
        ledger.transition(job, "running", "test")
        if n < 3:
            ledger.conn.execute("UPDATE jobs SET started_at=? WHERE id=?", (last_month, job))
        figures = {**FIGURES, "material_g": 1.0 + n * 0.37, "active_s": 60.0 * (n + 1)}
        ledger.finish(job, "completed", "normal", "", figures, TARIFF, "fdm-printer")
    assert ledger.outbox_pending() == 0, "nothing queued for a broker: nobody awaits the records"
    since, until = month_bounds(MONTH)
    ledger_total = sum((Decimal(p) for (p,) in ledger.conn.execute(
        "SELECT price FROM usage_records WHERE ended_at>=? AND ended_at<?", (since, until))), Decimal(0))  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "afn_agent", "report", "--config", str(path), "--month", MONTH,
                          "--out", str(tmp_path / "out"), "--lang", "fr"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{MONTH}: 47 job(s), 5 member(s), {ledger_total:.2f} EUR" in out.stdout, out.stdout
    for who in ("members", "machines"):
        rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / f"statement-{MONTH}-{who}.csv").read_text())))
        lines, total = rows[:-1], rows[-1]
        first = "member_id" if who == "members" else "machine"
        assert total[first] == "TOTAL" and Decimal(total["amount"]) == ledger_total
        assert sum(Decimal(r["amount"]) for r in lines) == ledger_total, "the lines add up to the total"
        assert sum(int(r["jobs"]) for r in lines) == 47
    members = {r["member_id"] for r in csv.DictReader(io.StringIO(
        (tmp_path / "out" / f"statement-{MONTH}-members.csv").read_text()))}  # fmt: skip
    assert members == {"m-0", "m-1", "m-2", "m-3", "-", "TOTAL"}
    page = (tmp_path / "out" / f"statement-{MONTH}.html").read_text()
    assert "Par membre" in page and "Par machine" in page and f"{ledger_total:.2f}".replace(".", ",") in page
    bad = subprocess.run([sys.executable, "-m", "afn_agent", "report", "--config", str(path), "--month",
                          "11/2026"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "--month: expected a month like 2026-11" in bad.stderr
    metrics = _metrics(cfg)
    assert "afn_usage_undelivered 0.0" in metrics, metrics


def _metrics(cfg) -> str:
    """/metrics of an agent on this ledger (its API only: the machine's port is not there)."""
    agent = Agent(cfg)
    api = ApiServer(agent).start()
    try:
        return httpx.get(f"http://127.0.0.1:{api.port}/metrics", headers={"X-Api-Key": KEYS["manager"]}).text
    finally:
        api.stop()
        agent.ledger.close()


def test_with_a_broker_mode_none_publishes_each_record_once(tmp_path, broker, start_sim):
    """With a broker (for the dashboard) and no booking system: each record goes out once, as an event
    does, and is never resent; the outbox empties."""
    sims = [start_sim("marlin", speed=20)]
    cfg = load_config(_config(tmp_path, broker, sims, mode="none"))
    watcher = Client(broker, "fleet")
    watcher.subscribe("afn/v1/fablab/+/usage")
    agent = Agent(cfg).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        for n in range(4):
            submit(cfg, agent.ledger, "printer-1", small_job(tmp_path, n, segments=20), "test", member_id="m-1")
        wait_for(lambda: len(agent.ledger.usage_after(0, 100)) == 4, 60, "four records")
        wait_for(lambda: agent.ledger.outbox_pending() == 0, 20, "the outbox empty (published, not awaited)")
        time.sleep(6.0)  # real time: in mode mqtt an unacknowledged record is resent after 2, then 4 s
        got = [json.loads(p)["record_id"] for _, p, _ in watcher.received("usage")]
        assert sorted(got) == sorted(r["record_id"] for _, r in agent.ledger.usage_after(0, 100)), got
        assert agent.ledger.undelivered() == 4  # nobody acknowledged them: kept, and not awaited
    finally:
        agent.stop()
        watcher.close()
