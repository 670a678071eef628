"""The fleet's job history: every usage record the agents publish (and any a manager imports from an
agent's `ledger export --format json`), kept by record id in the dashboard's own SQLite file, with the
events of each job. A view for managers: the agents' ledgers stay the source of truth for billing.

Pages are read by key (the end time and record id of the last row shown), never by offset, so the
hundredth page costs what the first does.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ledger.export import CSV_COLUMNS, flat

PAGE = 50
MAX_PAGE = 500
EVENTS_PER_JOB = 200
OUTCOMES = ("completed", "cancelled", "failed", "interrupted")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS records(
        record_id TEXT PRIMARY KEY, lab TEXT NOT NULL, machine TEXT NOT NULL, member_id TEXT,
        job_id TEXT, outcome TEXT, ended TEXT NOT NULL, record TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS records_end ON records(ended, record_id)",
    "CREATE INDEX IF NOT EXISTS records_machine ON records(machine, ended, record_id)",
    "CREATE INDEX IF NOT EXISTS records_member ON records(member_id, ended, record_id)",
    "CREATE INDEX IF NOT EXISTS records_outcome ON records(outcome, ended, record_id)",
    "CREATE INDEX IF NOT EXISTS records_machine_outcome ON records(machine, outcome, ended, record_id)",
    "CREATE INDEX IF NOT EXISTS records_job ON records(job_id)",
    """CREATE TABLE IF NOT EXISTS events(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, lab TEXT NOT NULL, machine TEXT NOT NULL, t REAL,
        job_id TEXT NOT NULL, event TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq)",
    """CREATE TABLE IF NOT EXISTS states(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, lab TEXT NOT NULL, machine TEXT NOT NULL, class TEXT,
        t REAL NOT NULL, bucket TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS states_machine ON states(lab, machine, t)",
    """CREATE TABLE IF NOT EXISTS pictures(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, lab TEXT NOT NULL, machine TEXT NOT NULL, job_id TEXT NOT NULL,
        moment TEXT, t REAL, sha256 TEXT, jpeg BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pictures_job ON pictures(job_id, seq)",
)
PICTURES = 20_000  # thumbnails kept (~20 KB each); the oldest go first
BUCKETS = ("busy", "heating", "waiting", "idle", "down")  # what a machine's time is spent as


def bucket_of(status: dict[str, Any], agent_online: bool = True) -> str:
    """Which utilisation bucket a machine's status puts it in now."""
    state, job = status.get("state"), status.get("job")
    if not agent_online or state in ("disconnected", "connecting", "resetting", "alarm", "fault"):
        return "down"
    if state == "printing":
        return "heating" if isinstance(job, dict) and job.get("state") == "heating" else "busy"
    if state in ("paused", "waiting"):
        return "waiting"
    return "down" if status.get("locked") else "idle"


@dataclass(frozen=True)
class Filter:
    """Which records: ended in [since, until) (ISO times), and optionally one member, machine, outcome,
    lab."""

    since: str | None = None
    until: str | None = None
    member: str | None = None
    machine: str | None = None
    outcome: str | None = None
    lab: str | None = None
    labs: tuple[str, ...] = ()  # the labs the reader may see (none: every lab)

    def where(self) -> tuple[str, list[Any]]:
        parts, args = ["1=1"], list(self.labs)
        if self.labs:
            parts.append(f"lab IN ({','.join('?' * len(self.labs))})")
        for column, op, value in (("ended", ">=", self.since), ("ended", "<", self.until),
                                  ("member_id", "=", self.member), ("machine", "=", self.machine),
                                  ("outcome", "=", self.outcome), ("lab", "=", self.lab)):  # fmt: skip
            if value:
                parts.append(f"{column} {op} ?")
                args.append(value)
        return " AND ".join(parts), args


def _valid(record: Any) -> bool:
    """Enough of a usage record to list and export it (the agents' schema, checked where it matters)."""
    try:
        flat(record)
    except (KeyError, TypeError, AttributeError):
        return False
    end, record_id = record["end"], record["record_id"]
    return isinstance(record_id, str) and len(record_id) <= 80 and isinstance(end, str) and len(end) <= 40


def _split(changes: list[tuple[float, str]], start: float, end: float) -> dict[str, float]:
    """Seconds per bucket over [start, end) from (time, bucket) changes in order."""
    out = dict.fromkeys((*BUCKETS, "unknown"), 0.0)
    at, bucket = start, "unknown"
    for t, b in changes:
        if t > at:
            out[bucket] += min(t, end) - at
            at = t
        bucket = b
    out[bucket] += max(end - at, 0.0)
    return {k: round(v, 1) for k, v in out.items()}


def _row(lab: str, r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["record_id"], lab, r["machine"]["id"], r.get("member_id"), r["job"].get("id"),
            r["job"]["outcome"], r["end"], json.dumps(r, sort_keys=True))  # fmt: skip


class History:
    """Records and job events by id; one connection, used under a lock (the MQTT thread writes, the
    web threads read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # a view: the agents' ledgers hold the truth
        for statement in _SCHEMA:
            self.conn.execute(statement)
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], str] = {}  # (lab, machine) -> its last bucket written

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def keep(self, lab: str, record: Any) -> bool:
        """Keep a usage record once (a resent or imported one changes nothing); False when it is not a
        record at all."""
        if not _valid(record):
            return False
        with self._lock:
            self.conn.execute("INSERT OR IGNORE INTO records VALUES(?,?,?,?,?,?,?,?)", _row(lab, record))
        return True

    def keep_many(self, lab: str, records: list[Any]) -> tuple[int, int]:
        """An agent's exported records in one transaction: (kept or already there, not records)."""
        good = [r for r in records if _valid(r)]
        rows = [_row(lab, r) for r in good]
        with self._lock:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR IGNORE INTO records VALUES(?,?,?,?,?,?,?,?)", rows)
            self.conn.execute("COMMIT")
        return len(good), len(records) - len(good)

    def event(self, lab: str, machine: str, event: dict[str, Any]) -> None:
        """An event that belongs to a job (it names one), kept for that job's page."""
        job_id = event.get("job_id")
        if not isinstance(job_id, str) or len(job_id) > 64:
            return
        t = event.get("t") if isinstance(event.get("t"), int | float) else None
        with self._lock:
            count = self.conn.execute("SELECT COUNT(*) FROM events WHERE job_id=?", (job_id,)).fetchone()[0]
            if count < EVENTS_PER_JOB:
                self.conn.execute("INSERT INTO events(lab, machine, t, job_id, event) VALUES(?,?,?,?,?)",
                                  (lab, machine, t, job_id, json.dumps(event)))  # fmt: skip

    def picture(self, lab: str, machine: str, facts: dict[str, Any], jpeg: bytes) -> None:
        """A job's camera thumbnail (the agent keeps the full picture and its hash)."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO pictures(lab, machine, job_id, moment, t, sha256, jpeg) VALUES(?,?,?,?,?,?,?)",
                (
                    lab,
                    machine,
                    facts["job_id"][:64],
                    facts.get("moment"),
                    facts.get("t"),
                    facts.get("sha256"),
                    jpeg,
                ),
            )
            self.conn.execute(
                "DELETE FROM pictures WHERE seq <= (SELECT MAX(seq) FROM pictures) - ?", (PICTURES,)
            )

    def pictures_of(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT seq, moment, t, sha256 FROM pictures WHERE job_id=? ORDER BY seq", (job_id,)
            ).fetchall()
        return [{"id": r[0], "moment": r[1], "t": r[2], "sha256": r[3]} for r in rows]

    def picture_jpeg(self, picture_id: int, labs: tuple[str, ...]) -> bytes | None:
        """A job's thumbnail, if it is of one of these labs."""
        with self._lock:
            row = self.conn.execute("SELECT jpeg, lab FROM pictures WHERE seq=?", (picture_id,)).fetchone()
        return bytes(row[0]) if row and row[1] in labs else None

    def state(self, lab: str, machine: str, cls: str | None, bucket: str, t: float) -> None:
        """A machine's time is now spent as `bucket` (a row only when that changes)."""
        if self._buckets.get((lab, machine)) == bucket or len(machine) > 80:
            return
        self._buckets[lab, machine] = bucket
        with self._lock:
            self.conn.execute("INSERT INTO states(lab, machine, class, t, bucket) VALUES(?,?,?,?,?)",
                              (lab, machine, (cls or "")[:40], t, bucket))  # fmt: skip

    def utilisation(self, start: float, end: float, labs: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
        """Seconds per bucket for each machine over [start, end), from its state changes; time before the
        first change the dashboard saw is `unknown`."""
        where, args = (f"WHERE lab IN ({','.join('?' * len(labs))})", list(labs)) if labs else ("", [])
        with self._lock:
            machines = self.conn.execute(
                f"SELECT lab, machine, MAX(class) FROM states {where} GROUP BY lab, machine", args
            )
            out: dict[str, dict[str, Any]] = {}
            for lab, machine, cls in machines.fetchall():
                before = self.conn.execute(
                    "SELECT t, bucket FROM states WHERE lab=? AND machine=? AND t<=? ORDER BY t DESC LIMIT 1",
                    (lab, machine, start),
                ).fetchall()
                during = self.conn.execute(
                    "SELECT t, bucket FROM states WHERE lab=? AND machine=? AND t>? AND t<? ORDER BY t",
                    (lab, machine, start, end),
                ).fetchall()
                split = _split(before + during, start, end)
                out[f"{lab}:{machine}"] = {"lab": lab, "machine": machine, "class": cls, **split}
        return out

    def per_day(self, since: str, labs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Jobs, busy hours and revenue (per currency) per day since `since` (a date)."""
        where, args = "ended >= ?", [since]
        if labs:
            where, args = where + f" AND lab IN ({','.join('?' * len(labs))})", [*args, *labs]
        sql = (
            "SELECT substr(ended, 1, 10) AS day, COUNT(*), SUM(json_extract(record, '$.time_s.total_s')),"
            " json_extract(record, '$.currency') AS currency,"
            " SUM(CAST(json_extract(record, '$.price') AS REAL))"
            f"FROM records WHERE {where} GROUP BY day, currency ORDER BY day"
        )  # fmt: skip
        with self._lock:
            rows = self.conn.execute(sql, args).fetchall()
        days: dict[str, dict[str, Any]] = {}
        for day, jobs, seconds, currency, revenue in rows:
            d = days.setdefault(day, {"day": day, "jobs": 0, "busy_h": 0.0, "revenue": {}})
            d["jobs"] += jobs
            d["busy_h"] += round((seconds or 0) / 3600, 3)
            d["revenue"][currency or "?"] = round(revenue or 0, 2)
        return list(days.values())

    def page(self, which: Filter, after: tuple[str, str] | None = None, limit: int = PAGE) -> dict[str, Any]:
        """Newest first, `limit` records after the cursor (end, record id) of the last one shown."""
        where, args = which.where()
        limit = max(1, min(limit, MAX_PAGE))
        if after is not None:
            where += " AND (ended, record_id) < (?, ?)"
            args += list(after)
        sql = f"SELECT record FROM records WHERE {where} ORDER BY ended DESC, record_id DESC LIMIT ?"
        with self._lock:
            rows = [json.loads(r[0]) for r in self.conn.execute(sql, (*args, limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows and more else None
        return {"records": rows, "next": [last["end"], last["record_id"]] if last else None}

    def count(self, which: Filter) -> int:
        where, args = which.where()
        with self._lock:
            return int(self.conn.execute(f"SELECT COUNT(*) FROM records WHERE {where}", args).fetchone()[0])

    def record(
        self, record_id: str, labs: tuple[str, ...]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """One record of one of these labs and its job's events, oldest first."""
        with self._lock:
            found = self.conn.execute(
                "SELECT record, job_id, lab FROM records WHERE record_id=?", (record_id,)
            )
            row = found.fetchone()
            if row is None or row[2] not in labs:
                return None
            events = self.conn.execute("SELECT event FROM events WHERE job_id=? ORDER BY seq", (row[1],))
            return json.loads(row[0]), [json.loads(e[0]) for e in events]

    def csv(self, which: Filter) -> Iterator[str]:
        """The records as `afn-agent ledger export` writes them (same columns, oldest first), a thousand
        rows at a time, read on a connection of its own (a long export holds no lock)."""
        where, args = which.where()
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            cursor = conn.execute(f"SELECT record FROM records WHERE {where} ORDER BY ended, rowid", args)
            out = io.StringIO()
            writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            while rows := cursor.fetchmany(1000):
                for (text,) in rows:
                    writer.writerow(flat(json.loads(text)))
                yield out.getvalue()
                out.seek(0)
                out.truncate()
            yield out.getvalue()
        finally:
            conn.close()
