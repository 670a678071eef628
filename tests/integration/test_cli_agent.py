"""The agent's CLI: jobs, members, ledger export, each through `afn-agent` as a manager runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from afn_agent.sim.jobs import circle_gcode
from tests.helpers import write_config


def afn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "afn_agent", *args], capture_output=True, text=True, timeout=60
    )


def config(tmp_path):
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": "/dev/null",
               "tariff": "printer", "reader": "sim"}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    path.write_text(path.read_text() + '\n[access]\nbadge_secret = "site-badge-secret-0123456789"\n')
    return str(path)


def test_jobs_add_list_and_refusal(tmp_path):
    cfg = config(tmp_path)
    good = circle_gcode(tmp_path / "ok.gcode", 200, 0.5, centre=(110, 110))
    p = afn("jobs", "add", str(good), "--config", cfg, "--machine", "printer-1", "--member", "m-1")
    assert p.returncode == 0, p.stderr
    quote = json.loads(p.stdout)
    assert quote["quote"]["currency"] == "EUR" and quote["time_s"] > 0
    bad = tmp_path / "eeprom.gcode"
    bad.write_text("G28\nM502\nM500\nG1 X10 Y10\n")
    p = afn("jobs", "add", str(bad), "--config", cfg, "--machine", "printer-1")
    assert p.returncode == 4 and "M502" in p.stderr
    p = afn("jobs", "add", str(good), "--config", cfg, "--machine", "printer-9")
    assert p.returncode == 2 and "no machine 'printer-9'" in p.stderr
    p = afn("jobs", "list", "--config", cfg)
    assert (
        p.stdout.count("\n") == 1 and "queued" in p.stdout and "m-1" in p.stdout
    )  # a manager's CLI job runs
    p = afn("jobs", "list", "--config", cfg, "--json")
    jobs = json.loads(p.stdout)
    assert p.returncode == 0 and [(j["state"], j["member_id"], j["name"]) for j in jobs] == [
        ("queued", "m-1", "ok.gcode")
    ]
    assert jobs[0]["estimate"]["time_s"] > 0 and "path" not in jobs[0]
    assert len(list((tmp_path / "data" / "jobs").iterdir())) == 1, (
        "a refused file leaves nothing in the spool"
    )


def test_members_import_and_check(tmp_path):
    cfg = config(tmp_path)
    csv = tmp_path / "members.csv"
    csv.write_text(
        "member_id,name,roles,badge_uid,class,expires\n"
        "ana,Ana,member,0A00123456,fdm-printer,2099-01-01\n"
        "bob,Bob,member,0A00BBBBBB,laser,2099-01-01\n"
    )
    p = afn("members", "import", str(csv), "--config", cfg)
    assert p.returncode == 0 and "imported 2 member(s), directory version 1" in p.stdout, p.stderr
    p = afn("members", "check", "0A00123456", "--config", cfg, "--machine", "printer-1")
    assert p.returncode == 0 and p.stdout.startswith("allowed") and "(Ana, ana)" in p.stdout
    p = afn("members", "check", "0A00BBBBBB", "--config", cfg, "--machine", "printer-1")
    assert p.returncode == 5 and p.stdout.startswith("not_trained")
    p = afn("members", "check", "0A00BBBBBB", "--config", cfg, "--machine", "printer-1", "--json")
    said = json.loads(p.stdout)
    assert p.returncode == 5 and (said["code"], said["allowed"], said["member_id"]) == (
        "not_trained",
        False,
        "bob",
    )
    p = afn("members", "check", "FFFF", "--config", cfg, "--machine", "printer-1")
    assert p.returncode == 5 and p.stdout.startswith("unknown_badge")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,badge_uid\nAna,1234\n")
    p = afn("members", "import", str(bad), "--config", cfg)
    assert p.returncode == 2 and "missing column member_id" in p.stderr
    db = b"".join(f.read_bytes() for f in (tmp_path / "data").glob("ledger.sqlite3*"))
    assert b"0A00123456" not in db


def test_ledger_export_bad_date(tmp_path):
    p = afn("ledger", "export", "--config", config(tmp_path), "--since", "yesterday")
    assert p.returncode == 2 and "--since: expected a date" in p.stderr
    p = afn("ledger", "export", "--config", config(tmp_path), "--since", "2026-01-01")
    assert p.returncode == 0 and p.stdout.startswith("record_id,end,start")


def test_ledger_backup_while_it_is_written(tmp_path):
    """docs/deploy.md's nightly copy: taken while another connection writes, whole, checked."""
    import sqlite3
    import threading

    from afn_agent.config import load_config
    from afn_agent.ledger import Ledger

    cfg = config(tmp_path)
    assert afn("ledger", "backup", "--config", cfg, "--to", str(tmp_path)).returncode == 6  # no ledger yet
    job = circle_gcode(tmp_path / "ok.gcode", 200, 0.5, centre=(110, 110))
    for _ in range(3):
        assert afn("jobs", "add", str(job), "--config", cfg, "--machine", "printer-1").returncode == 0
    ledger = Ledger(load_config(cfg).ledger_path, "fablab")
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            ledger.audit("test", "busy", "written", "printer-1", None, n=n)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copies = tmp_path / "backups"
        copies.mkdir()
        p = afn("ledger", "backup", "--config", cfg, "--to", str(copies))
    finally:
        stop.set()
        writer.join()
    assert p.returncode == 0, p.stderr
    assert "3 job(s), 0 usage record(s), integrity ok" in p.stdout
    (copy,) = copies.glob("ledger-*.sqlite3")
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
    assert not list(copies.glob("*.part"))
