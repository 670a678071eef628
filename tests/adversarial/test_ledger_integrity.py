"""Issue 15, class 16: a damaged ledger started silently (and failed later at export); a 0-byte one
silently became a new empty ledger; a garbage header ended in a traceback without the file's name."""

from __future__ import annotations

import pytest

from afn_agent.ledger import Ledger
from afn_agent.ledger.db import LedgerError


def test_an_empty_ledger_file_is_refused_not_started_afresh(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"")
    with pytest.raises(LedgerError, match=r"empty \(0 bytes\)") as err:
        Ledger(path)
    assert str(path) in str(err.value) and path.stat().st_size == 0


def test_a_garbage_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a ledger the agent can read") as err:
        Ledger(path)
    assert str(path) in str(err.value)


def test_a_damaged_page_is_found_at_start_with_the_recovery_command(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    with ledger.tx() as c:
        for i in range(2000):
            c.execute(
                "INSERT INTO audit(at, actor, action, result) VALUES('2026-12-03', ?, 'test', 'ok')",
                (f"a{i}" * 20,),
            )
    ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page * 3, page * 3 + 200):  # scribble over a b-tree page's header and cells
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="damaged") as err:
        Ledger(path)
    assert ".recover" in str(err.value) and str(path) in str(err.value)


def test_a_sound_ledger_opens_again(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    Ledger(path).close()


def test_the_cli_says_so_in_a_sentence_not_a_traceback(tmp_path):
    import subprocess
    import sys

    from tests.helpers import write_config

    config = write_config(tmp_path / "agent.toml", [])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ledger.sqlite3").write_bytes(b"")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "afn_agent",
            "ledger",
            "export",
            "--since",
            "2026-01-01",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 6, run.stderr  # Exit.LEDGER
    assert "Traceback" not in run.stderr and "0 bytes" in run.stderr
