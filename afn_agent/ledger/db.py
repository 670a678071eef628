"""Opening the ledger's SQLite file: WAL, full sync, and the schema migrations in order.

Each migration is a list of statements run in one transaction and recorded in `user_version`, so a
database from any older agent is brought forward on open and a newer one is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MAX_INTEGER = 2**63 - 1  # SQLite's largest: a row id past it from a URL overflows in the driver (a 500)

MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the first schema
        """CREATE TABLE machines(
            id TEXT PRIMARY KEY, class TEXT NOT NULL, profile TEXT NOT NULL,
            locked INTEGER NOT NULL DEFAULT 0, lock_reason TEXT, lock_pending INTEGER NOT NULL DEFAULT 0,
            needs_confirmation TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE sessions(
            id TEXT PRIMARY KEY, machine_id TEXT NOT NULL REFERENCES machines(id),
            member_id TEXT NOT NULL, supervisor_id TEXT, booking_id TEXT, account TEXT,
            opened_at TEXT NOT NULL, allowed_until TEXT, closed_at TEXT, close_reason TEXT)""",
        "CREATE INDEX sessions_open ON sessions(machine_id, closed_at)",
        """CREATE TABLE jobs(
            id TEXT PRIMARY KEY, machine_id TEXT NOT NULL REFERENCES machines(id),
            state TEXT NOT NULL, queue_pos INTEGER NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
            sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, source TEXT NOT NULL,
            member_id TEXT, supervisor_id TEXT, account TEXT, booking_id TEXT, session_id TEXT,
            estimate_json TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL,
            started_at TEXT, ended_at TEXT, checkpoint_json TEXT, checkpoint_at TEXT,
            stop_type TEXT, reason TEXT)""",
        "CREATE INDEX jobs_state ON jobs(machine_id, state, queue_pos)",
        """CREATE TABLE job_transitions(
            seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id),
            from_state TEXT NOT NULL, to_state TEXT NOT NULL, cause TEXT NOT NULL, at TEXT NOT NULL)""",
        """CREATE TABLE usage_records(
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL UNIQUE REFERENCES jobs(id), machine_id TEXT NOT NULL,
            member_id TEXT, ended_at TEXT NOT NULL, price TEXT NOT NULL, currency TEXT NOT NULL,
            record_json TEXT NOT NULL, created_at TEXT NOT NULL, delivered_at TEXT)""",
        "CREATE INDEX usage_ended ON usage_records(ended_at)",
        """CREATE TABLE outbox(
            seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, machine_id TEXT NOT NULL,
            payload TEXT NOT NULL, record_id TEXT, created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
            sent_at TEXT, acked_at TEXT)""",
        "CREATE INDEX outbox_pending ON outbox(acked_at, next_try)",
        "CREATE INDEX outbox_record ON outbox(record_id)",
        """CREATE TABLE audit(
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, machine_id TEXT, subject TEXT, result TEXT NOT NULL,
            detail_json TEXT NOT NULL DEFAULT '{}')""",
    ),
    (  # 2: one-time nonces of signed commands, kept until their token expires
        "CREATE TABLE nonces(nonce TEXT PRIMARY KEY, expires REAL NOT NULL)",
    ),
    (  # 3: the member directory cached from the booking system (badges only as keyed hashes)
        """CREATE TABLE members(
            id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL DEFAULT 'member',
            active INTEGER NOT NULL DEFAULT 1)""",
        """CREATE TABLE badges(
            hash TEXT PRIMARY KEY, member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE)""",
        """CREATE TABLE trainings(
            member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE, machine_class TEXT NOT NULL,
            expires TEXT, grace_days REAL NOT NULL DEFAULT 0, supervised INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY(member_id, machine_class))""",
        """CREATE TABLE bookings(
            id TEXT PRIMARY KEY, machine_id TEXT NOT NULL, member_id TEXT NOT NULL,
            starts TEXT NOT NULL, ends TEXT NOT NULL)""",
        "CREATE INDEX bookings_machine ON bookings(machine_id, starts)",
        """CREATE TABLE directory_meta(
            id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, synced_at TEXT NOT NULL,
            source TEXT NOT NULL)""",
    ),
    (  # 4: a manager may release a member's held job without the member's session
        "ALTER TABLE jobs ADD COLUMN released_by_manager TEXT",
    ),
    (  # 5: who sent a job in (an API key's name: its spool quota), and when its file left the spool
        "ALTER TABLE jobs ADD COLUMN submitted_by TEXT",
        "ALTER TABLE jobs ADD COLUMN file_removed_at TEXT",
    ),
    (  # 6: alarms kept with their reason until a person clears them, across restarts
        """CREATE TABLE alarms(
            id INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, kind TEXT NOT NULL,
            data_json TEXT NOT NULL, raised_at TEXT NOT NULL, cleared_at TEXT, cleared_by TEXT)""",
        "CREATE INDEX alarms_open ON alarms(machine_id, cleared_at)",
    ),
    (  # 7: the material loaded in a machine (a preset's name), set by a manager or the member at it
        "ALTER TABLE machines ADD COLUMN material TEXT",
    ),
    (  # 8: API keys added while the agent runs: members' own slicer keys, `afn-agent api-key --config`
        """CREATE TABLE api_keys(
            id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, member_id TEXT,
            machines_json TEXT NOT NULL DEFAULT '[]', sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
            created_by TEXT NOT NULL, revoked_at TEXT, revoked_by TEXT)""",
        "CREATE INDEX api_keys_member ON api_keys(member_id)",
    ),
    (  # 9: the console: one-time codes that pair a tablet to one machine; pictures slicers embed in jobs
        """CREATE TABLE pairing_codes(
            code_hash TEXT PRIMARY KEY, machine_id TEXT NOT NULL, expires_at REAL NOT NULL,
            created_by TEXT NOT NULL, used_at TEXT, key_id TEXT)""",
        """CREATE TABLE thumbnails(
            job_id TEXT PRIMARY KEY, media_type TEXT NOT NULL, width INTEGER NOT NULL,
            height INTEGER NOT NULL, data BLOB NOT NULL)""",
        "CREATE INDEX jobs_ended ON jobs(machine_id, ended_at)",  # the console's last-job summary
    ),
    (  # 10: a member's own notification targets (Apprise URLs, opted in through the directory), language
        "ALTER TABLE members ADD COLUMN notify_json TEXT",
        "ALTER TABLE members ADD COLUMN language TEXT",
    ),
    (  # 11: applications asking for a key (OctoPrint's AppKeys flow: Home Assistant), a manager decides
        """CREATE TABLE app_key_requests(
            id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, machine_id TEXT NOT NULL,
            app TEXT NOT NULL, user_name TEXT, origin TEXT, created_at TEXT NOT NULL,
            expires_at REAL NOT NULL, decision TEXT, decided_by TEXT, decided_at TEXT, key_id TEXT)""",
    ),
    (  # 12: camera pictures of jobs (start, end, fault, on demand): the file beside the ledger and its hash
        """CREATE TABLE snapshots(
            id INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL, job_id TEXT, moment TEXT NOT NULL,
            path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, taken_at TEXT NOT NULL,
            taken_t REAL NOT NULL, actor TEXT NOT NULL, removed_at TEXT)""",
        "CREATE INDEX snapshots_job ON snapshots(job_id)",
        "CREATE INDEX snapshots_machine ON snapshots(machine_id, taken_t)",
    ),
]


class LedgerError(RuntimeError):
    """The ledger file cannot be used as it is; the message names the file."""


RECOVER = "sqlite3 {path} .recover | sqlite3 {path}.recovered"  # Debian's sqlite3; then check and swap


def check_file(path: str | Path) -> None:
    """Refuse, with the file's name and what to do, a ledger that is not whole: an empty file (it
    would silently become a new, empty ledger: every record gone), not a database, or damaged pages."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise LedgerError(f"{path}: the ledger cannot be opened: this is {what}, where the agent keeps its "
                          "SQLite file; move it aside")  # fmt: skip
    if path.stat().st_size == 0:
        raise LedgerError(
            f"{path}: the ledger file is empty (0 bytes): it was truncated, so every record it held is gone "
            f"from it. Restore it from a backup; to start a new ledger on purpose, move it aside first "
            f"(mv {path} {path}.empty)."
        )
    try:
        conn = sqlite3.connect(str(path), timeout=30.0)  # read-write: a WAL left by a crash is replayed
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "malformed" not in str(exc):
            why = f"not a ledger the agent can read ({exc}); restore it from a backup"
            raise LedgerError(f"{path}: {why}") from None
        problems = [str(exc)]
    if problems != ["ok"]:
        raise LedgerError(
            f"{path}: the ledger is damaged ({'; '.join(problems)}). Stop the agent, keep a copy, and "
            f"rebuild what can be read: {RECOVER.format(path=path)}, then check the result with "
            f"`afn-agent ledger export` before putting it in place."
        )


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode with full sync: a committed usage record survives a power cut."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=30000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise LedgerError(f"{path}: cannot use write-ahead logging (journal mode stays {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection, path: str | Path) -> int:
    """Bring the schema to the latest version; returns it."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise LedgerError(
            f"{path}: schema version {version} is newer than this agent knows ({len(MIGRATIONS)}); "
            "upgrade the agent rather than let it write an older schema"
        )
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
