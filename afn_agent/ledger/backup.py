"""A copy of the ledger taken while the agent runs: SQLite's online backup (consistent, the WAL's pages
included, writers not stopped), checked before it replaces the previous copy. Copying the file with `cp`
while the agent writes can give a torn copy, and misses what is still in the WAL."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .db import LedgerError


@dataclass(frozen=True)
class Copy:
    path: Path
    bytes: int
    jobs: int
    usage_records: int


def backup(source: Path, target: Path) -> Copy:
    """Copy `source` to `target` (a file, or a directory to put `ledger-<date>.sqlite3` in)."""
    if not source.is_file():
        raise LedgerError(f"{source}: no ledger there (check [agent].data_dir)")
    if target.is_dir():
        from datetime import date

        target = target / f"ledger-{date.today().isoformat()}.sqlite3"
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source, timeout=30)
        dst = sqlite3.connect(part)
        try:
            src.backup(dst, pages=4096)  # in steps: the agent's writers wait at most one step
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
            jobs = dst.execute("SELECT count(*) FROM jobs").fetchone()[0]
            records = dst.execute("SELECT count(*) FROM usage_records").fetchone()[0]
        finally:
            dst.close()
            src.close()
    except (OSError, sqlite3.Error) as exc:
        part.unlink(missing_ok=True)
        raise LedgerError(f"{source} -> {target}: the copy failed ({exc})") from None
    if verdict != "ok":
        part.unlink(missing_ok=True)
        raise LedgerError(f"{source}: the copy does not pass SQLite's integrity check ({verdict})")
    os.replace(part, target)
    return Copy(target, target.stat().st_size, int(jobs), int(records))
