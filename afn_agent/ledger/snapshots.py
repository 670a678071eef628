"""Camera pictures in the ledger: which file, its hash, which job and moment. A picture removed by the
retention limits keeps its row (and hash), marked removed: the evidence of what was taken stays."""

from __future__ import annotations

import time
from typing import Any

from .store import Ledger
from .usage import iso, utc_now


class Snapshots:
    """The `snapshots` table; any thread (the ledger gives each its own connection)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add(self, machine_id: str, job_id: str | None, moment: str, path: str, sha256: str, size: int,
            actor: str) -> dict[str, Any]:  # fmt: skip
        now = time.time()
        with self.ledger.tx() as c:
            cur = c.execute(
                "INSERT INTO snapshots(machine_id, job_id, moment, path, sha256, bytes, taken_at, taken_t,"
                " actor) VALUES(?,?,?,?,?,?,?,?,?)",
                (machine_id, job_id, moment, path, sha256, size, iso(utc_now()), now, actor),
            )
            row = c.execute("SELECT * FROM snapshots WHERE id=?", (cur.lastrowid,)).fetchone()
        return dict(row)

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.ledger.conn.execute("SELECT * FROM snapshots WHERE job_id=? ORDER BY id", (job_id,))
        return [dict(r) for r in rows]

    def one(self, snapshot_id: int) -> dict[str, Any] | None:
        row = self.ledger.conn.execute("SELECT * FROM snapshots WHERE id=?", (snapshot_id,)).fetchone()
        return dict(row) if row else None

    def kept(self, machine_id: str) -> list[dict[str, Any]]:
        """A machine's pictures still on disk, newest first."""
        rows = self.ledger.conn.execute(
            "SELECT * FROM snapshots WHERE machine_id=? AND removed_at IS NULL"
            " ORDER BY taken_t DESC, id DESC",
            (machine_id,),
        )
        return [dict(r) for r in rows]

    def removed(self, snapshot_id: int) -> None:
        with self.ledger.tx() as c:
            c.execute("UPDATE snapshots SET removed_at=? WHERE id=?", (iso(utc_now()), snapshot_id))
