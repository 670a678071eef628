"""The ledger: jobs, sessions, usage records, outbox and audit in one SQLite file.

One connection per thread (SQLite serialises the writers; WAL lets readers run beside them). A usage
record, its job's last transition and its outbox row are committed in one transaction, so a record is
either billed and queued for delivery or not there at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .db import check_file, connect, migrate
from .states import TERMINAL, IllegalTransition, check_transition
from .tariff import Tariff
from .usage import build_record, iso, record_id_for, utc_now

LIVE = ("starting", "heating", "running", "paused", "waiting")
LIVE_MARKS = ",".join("?" * len(LIVE))
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 300.0


class Ledger:
    """The agent's source of truth; every method is safe to call from any thread."""

    def __init__(self, path: str | Path, site: str = "lab") -> None:
        self.path = Path(path)
        self.site = site
        # how a new usage record leaves: "usage" (sent until the booking system acknowledges it),
        # "usage-copy" (published once, acknowledged by nobody), None (kept here only); agent.open_ledger
        self.usage_outbox: str | None = "usage"
        self._local = threading.local()
        check_file(self.path)
        migrate(self.conn, self.path)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once so two writers never deadlock upgrading a read."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ---- machines ---------------------------------------------------------------------------------
    def upsert_machine(self, machine_id: str, machine_class: str, profile: str) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO machines(id, class, profile, updated_at) VALUES(?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET class=excluded.class, profile=excluded.profile, "
                "updated_at=excluded.updated_at",
                (machine_id, machine_class, profile, iso(utc_now())),
            )

    def machine(self, machine_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM machines WHERE id=?", (machine_id,)).fetchone()
        return dict(row) if row else None

    def set_machine(self, machine_id: str, **fields: Any) -> None:
        """Update lock, confirmation and material fields (names checked against the table)."""
        allowed = {"locked", "lock_reason", "lock_pending", "needs_confirmation", "material"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"machines has no settable field {sorted(bad)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            c.execute(
                f"UPDATE machines SET {sets}, updated_at=? WHERE id=?",
                (*fields.values(), iso(utc_now()), machine_id),
            )

    # ---- jobs -------------------------------------------------------------------------------------
    def add_job(
        self,
        machine_id: str,
        path: str,
        name: str,
        sha256: str,
        size: int,
        source: str,
        estimate: dict[str, Any] | None = None,
        held: bool = False,
        **who: str | None,
    ) -> str:
        """Queue a job (or hold it for a badge); `who` takes member_id, supervisor_id, account, booking_id,
        session_id."""
        job_id = str(uuid.uuid4())
        fields = ("member_id", "supervisor_id", "account", "booking_id", "session_id", "submitted_by")
        bad = set(who) - set(fields)
        if bad:
            raise ValueError(f"add_job: unknown field {sorted(bad)}")
        with self.tx() as c:
            pos = c.execute(
                "SELECT COALESCE(MAX(queue_pos), 0) + 1 FROM jobs WHERE machine_id=?", (machine_id,)
            )
            c.execute(
                "INSERT INTO jobs(id, machine_id, state, queue_pos, name, path, sha256, bytes, source, "
                "estimate_json, created_at, member_id, supervisor_id, account, booking_id, session_id, "
                "submitted_by) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    machine_id,
                    "held" if held else "queued",
                    pos.fetchone()[0],
                    name,
                    path,
                    sha256,
                    size,
                    source,
                    json.dumps(estimate or {}),
                    iso(utc_now()),
                    *(who.get(f) for f in fields),
                ),
            )
            self._transition_row(c, job_id, "new", "held" if held else "queued", f"added by {source}")
        return job_id

    def spooled_bytes(self, submitted_by: str | None = None) -> int:
        """Bytes of job files still in the spool (all, or those one API key sent in)."""
        sql, args = "SELECT COALESCE(SUM(bytes), 0) FROM jobs WHERE file_removed_at IS NULL", []
        if submitted_by is not None:
            sql, args = sql + " AND submitted_by=?", [submitted_by]
        return int(self.conn.execute(sql, args).fetchone()[0])

    def spool_leftovers(self, ended_before: str) -> list[dict[str, Any]]:
        """Ended jobs whose file is still in the spool and ended before `ended_before` (ISO UTC)."""
        rows = self.conn.execute(
            "SELECT id, path FROM jobs "
            "WHERE file_removed_at IS NULL AND ended_at IS NOT NULL AND ended_at <= ?",
            (ended_before,),
        )
        return [dict(r) for r in rows]

    def file_removed(self, job_id: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE jobs SET file_removed_at=? WHERE id=? AND file_removed_at IS NULL",
                (iso(utc_now()), job_id),
            )

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(row) if row else None

    def jobs(self, machine_id: str | None = None, states: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if machine_id:
            sql += " AND machine_id=?"
            args.append(machine_id)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY queue_pos", args)]

    def last_ended(self, machine_id: str) -> dict[str, Any] | None:
        """The job that ended last at a machine (the console's summary), without reading its history."""
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE machine_id=? AND ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT 1",
            (machine_id,),
        ).fetchone()
        return dict(row) if row else None

    def waiting(self, machine_id: str) -> int:
        """How many jobs wait for the machine (queued or held), counted, not read."""
        sql = "SELECT COUNT(*) FROM jobs WHERE machine_id=? AND state IN ('queued', 'held')"
        return int(self.conn.execute(sql, (machine_id,)).fetchone()[0])

    def next_queued(self, machine_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE machine_id=? AND state='queued' ORDER BY queue_pos LIMIT 1",
            (machine_id,),
        ).fetchone()
        return dict(row) if row else None

    def transition(self, job_id: str, new: str, cause: str) -> dict[str, Any]:
        """Move a job along its state machine; an illegal move raises IllegalTransition."""
        if new in TERMINAL:
            raise ValueError(f"job {job_id}: end a job with finish(), which writes its usage record")
        with self.tx() as c:
            job = self._locked_job(c, job_id)
            check_transition(job_id, job["state"], new)
            started = job["started_at"] or (iso(utc_now()) if new == "starting" else None)
            c.execute("UPDATE jobs SET state=?, started_at=? WHERE id=?", (new, started, job_id))
            self._transition_row(c, job_id, job["state"], new, cause)
            job.update(state=new, started_at=started)
        return job

    def checkpoint(self, job_id: str, figures: dict[str, Any]) -> None:
        """What a running job has used so far; a crash bills up to the last one."""
        with self.tx() as c:
            c.execute(
                f"UPDATE jobs SET checkpoint_json=?, checkpoint_at=? WHERE id=? AND state IN ({LIVE_MARKS})",
                (json.dumps(figures), iso(utc_now()), job_id, *LIVE),
            )

    def finish(
        self,
        job_id: str,
        outcome: str,
        stop_type: str,
        reason: str,
        figures: dict[str, Any],
        tariff: Tariff,
        machine_class: str,
        replayed: bool = False,
    ) -> dict[str, Any]:
        """End a job and write its usage record and outbox row, durably, in one transaction.

        A job that already has a record returns that record unchanged: ending a job twice bills it once.
        """
        if outcome not in TERMINAL:
            raise ValueError(f"job {job_id}: {outcome!r} is not an end state ({', '.join(TERMINAL)})")
        with self.tx() as c:
            job = self._locked_job(c, job_id)
            old = c.execute("SELECT record_json FROM usage_records WHERE job_id=?", (job_id,)).fetchone()
            if old:
                record: dict[str, Any] = json.loads(old[0])
                return record
            check_transition(job_id, job["state"], outcome)
            record = build_record(
                record_id_for(self.site, job_id),
                job,
                machine_class,
                self.site,
                outcome,
                stop_type,
                reason,
                figures,
                tariff,
                replayed,
            )
            payload = json.dumps(record, sort_keys=True)
            c.execute(
                "UPDATE jobs SET state=?, ended_at=?, stop_type=?, reason=?, checkpoint_json=? WHERE id=?",
                (outcome, record["end"], stop_type, reason, json.dumps(figures), job_id),
            )
            self._transition_row(c, job_id, job["state"], outcome, reason or stop_type)
            c.execute(
                "INSERT INTO usage_records(id, job_id, machine_id, member_id, ended_at, price, currency, "
                "record_json, created_at) VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    record["record_id"],
                    job_id,
                    job["machine_id"],
                    job["member_id"],
                    record["end"],
                    record["price"],
                    record["currency"],
                    payload,
                    iso(utc_now()),
                ),
            )
            if self.usage_outbox is not None:
                self._outbox_row(c, self.usage_outbox, job["machine_id"], payload, record["record_id"])
        return record

    def withdraw(self, job_id: str, cause: str) -> None:
        """A queued or held job that never reached the machine leaves the queue: no usage, no bill."""
        with self.tx() as c:
            job = self._locked_job(c, job_id)
            if job["state"] not in ("queued", "held"):
                raise IllegalTransition(f"job {job_id}: {job['state']} jobs are cancelled on the machine")
            c.execute(
                "UPDATE jobs SET state='cancelled', ended_at=?, reason=? WHERE id=?",
                (iso(utc_now()), cause, job_id),
            )
            self._transition_row(c, job_id, job["state"], "cancelled", cause)

    def release(
        self, job_id: str, cause: str, session_id: str | None = None, manager: str | None = None
    ) -> None:
        """held -> queued: the job may run (inside `session_id`, or on a manager's word)."""
        with self.tx() as c:
            job = self._locked_job(c, job_id)
            check_transition(job_id, job["state"], "queued")
            c.execute(
                "UPDATE jobs SET state='queued', session_id=COALESCE(?, session_id), released_by_manager=? "
                "WHERE id=?",
                (session_id, manager, job_id),
            )
            self._transition_row(c, job_id, job["state"], "queued", cause)

    def set_owner(self, job_id: str, member_id: str | None) -> None:
        """Whose job it is (a manager's reassignment); the usage record, made at its end, follows."""
        with self.tx() as c:
            c.execute("UPDATE jobs SET member_id=? WHERE id=?", (member_id, job_id))

    def move_job(self, job_id: str, position: int) -> None:
        """Put a waiting job at `position` (1 = next) among its machine's waiting jobs."""
        with self.tx() as c:
            job = self._locked_job(c, job_id)
            waiting = [r[0] for r in c.execute(
                "SELECT id FROM jobs WHERE machine_id=? AND state IN ('queued','held') ORDER BY queue_pos",
                (job["machine_id"],),
            )]  # fmt: skip
            waiting.remove(job_id)
            waiting.insert(min(position, len(waiting) + 1) - 1, job_id)
            base = c.execute(
                "SELECT COALESCE(MAX(queue_pos), 0) FROM jobs WHERE machine_id=?", (job["machine_id"],)
            )
            start = base.fetchone()[0] + 1
            for n, jid in enumerate(waiting):
                c.execute("UPDATE jobs SET queue_pos=? WHERE id=?", (start + n, jid))

    def live_jobs(self, machine_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs that were on a machine (starting … paused): after a crash, the ones to close."""
        return self.jobs(machine_id, LIVE)

    def _locked_job(self, c: sqlite3.Connection, job_id: str) -> dict[str, Any]:
        row = c.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id}")
        return dict(row)

    def _transition_row(self, c: sqlite3.Connection, job_id: str, old: str, new: str, cause: str) -> None:
        c.execute(
            "INSERT INTO job_transitions(job_id, from_state, to_state, cause, at) VALUES(?,?,?,?,?)",
            (job_id, old, new, cause, iso(utc_now())),
        )

    def transitions(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM job_transitions WHERE job_id=? ORDER BY seq", (job_id,))
        return [dict(r) for r in rows]

    # ---- usage records ----------------------------------------------------------------------------
    def put_thumbnail(self, job_id: str, media_type: str, width: int, height: int, data: bytes) -> None:
        with self.tx() as c:
            row = (job_id, media_type, width, height, data)
            c.execute("INSERT OR REPLACE INTO thumbnails VALUES(?,?,?,?,?)", row)

    def thumbnail(self, job_id: str) -> tuple[str, bytes] | None:
        """A job's picture (media type, bytes), kept after its file leaves the spool: the summary shows it."""
        sql = "SELECT media_type, data FROM thumbnails WHERE job_id=?"
        row = self.conn.execute(sql, (job_id,)).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def record_of(self, job_id: str) -> dict[str, Any] | None:
        """The usage record of an ended job (None while it runs, or for a job that never started)."""
        row = self.conn.execute("SELECT record_json FROM usage_records WHERE job_id=?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def usage_after(self, cursor: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """Records after a cursor (their `seq`), oldest first: the pull side of delivery."""
        rows = self.conn.execute(
            "SELECT seq, record_json FROM usage_records WHERE seq>? ORDER BY seq LIMIT ?", (cursor, limit)
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    def usage_between(self, since: str, until: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT record_json FROM usage_records WHERE ended_at>=?", [since]
        if until:
            sql += " AND ended_at<?"
            args.append(until)
        return [json.loads(r[0]) for r in self.conn.execute(sql + " ORDER BY ended_at, seq", args)]

    def acknowledge(self, record_id: str) -> bool:
        """The booking system has the record: stop sending it. Returns False for an unknown id."""
        now = iso(utc_now())
        with self.tx() as c:
            n = c.execute(
                "UPDATE usage_records SET delivered_at=COALESCE(delivered_at, ?) WHERE id=?", (now, record_id)
            ).rowcount
            c.execute("UPDATE outbox SET acked_at=COALESCE(acked_at, ?) WHERE record_id=?", (now, record_id))
        return n > 0

    def undelivered(self) -> int:
        sql = "SELECT COUNT(*) FROM usage_records WHERE delivered_at IS NULL"
        return int(self.conn.execute(sql).fetchone()[0])

    # ---- outbox -----------------------------------------------------------------------------------
    def outbox_add(self, kind: str, machine_id: str, payload: dict[str, Any]) -> int:
        """Queue an event for the bus; it stays until the broker has it (events) or the booking
        system acknowledges it (usage)."""
        with self.tx() as c:
            return self._outbox_row(c, kind, machine_id, json.dumps(payload, sort_keys=True), None)

    def _outbox_row(
        self, c: sqlite3.Connection, kind: str, machine_id: str, payload: str, record_id: str | None
    ) -> int:
        cur = c.execute(
            "INSERT INTO outbox(kind, machine_id, payload, record_id, created_at) VALUES(?,?,?,?,?)",
            (kind, machine_id, payload, record_id, iso(utc_now())),
        )
        return int(cur.lastrowid or 0)

    def outbox_due(self, now: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Rows to (re)send now, oldest first."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE acked_at IS NULL AND next_try<=? ORDER BY seq LIMIT ?", (now, limit)
        )
        return [dict(r) for r in rows]

    def outbox_tried(self, seq: int, now: float | None = None) -> None:
        """A row was handed to the client: try again later, backing off, until acknowledged."""
        now = time.time() if now is None else now
        with self.tx() as c:
            row = c.execute("SELECT attempts FROM outbox WHERE seq=?", (seq,)).fetchone()
            if row is None:
                return
            wait = min(RETRY_FIRST_S * 2 ** row[0], RETRY_MAX_S)
            c.execute("UPDATE outbox SET attempts=attempts+1, next_try=? WHERE seq=?", (now + wait, seq))

    def outbox_published(self, seq: int, final: bool) -> None:
        """The broker took a row (PUBACK). Events are then done; usage waits for the booking system."""
        now = iso(utc_now())
        with self.tx() as c:
            c.execute("UPDATE outbox SET sent_at=COALESCE(sent_at, ?) WHERE seq=?", (now, seq))
            if final:
                c.execute("UPDATE outbox SET acked_at=COALESCE(acked_at, ?) WHERE seq=?", (now, seq))

    def outbox_retry_now(self) -> None:
        """After a reconnection: everything unacknowledged goes out again at once."""
        with self.tx() as c:
            c.execute("UPDATE outbox SET next_try=0 WHERE acked_at IS NULL")

    def outbox_pending(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0])

    # ---- command nonces ---------------------------------------------------------------------------
    def use_nonce(self, nonce: str, expires: float) -> bool:
        """Record a command's nonce; False when it was used before (a replay)."""
        with self.tx() as c:
            c.execute("DELETE FROM nonces WHERE expires < ?", (time.time() - 60,))
            return c.execute("INSERT OR IGNORE INTO nonces VALUES(?,?)", (nonce, expires)).rowcount == 1

    # ---- audit ------------------------------------------------------------------------------------
    def audit(
        self,
        actor: str,
        action: str,
        result: str,
        machine_id: str | None = None,
        subject: str | None = None,
        /,
        **detail: Any,
    ) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO audit(at, actor, action, machine_id, subject, result, detail_json) "
                "VALUES(?,?,?,?,?,?,?)",
                (
                    iso(utc_now()),
                    actor,
                    action,
                    machine_id,
                    subject,
                    result,
                    json.dumps(detail, sort_keys=True),
                ),
            )

    def audit_log(self, machine_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM audit", []
        if machine_id:
            sql += " WHERE machine_id=?"
            args.append(machine_id)
        rows = self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))
        return [dict(r) for r in rows]
