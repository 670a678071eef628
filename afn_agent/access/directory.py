"""The member directory, cached in the ledger's SQLite file so badge decisions work offline.

The booking system sends a full snapshot (versioned) and deltas on top of it. Badge UIDs arrive raw or
already hashed; they are stored, compared and logged only as HMAC-SHA256 with the site's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..ledger import Ledger
from ..ledger.usage import iso, parse_iso, utc_now

ROLES = ("member", "trainer", "manager")


class DirectoryError(ValueError):
    """A snapshot or delta that cannot be applied; the message names the entry and the field."""


def badge_hash(secret: str, uid: str) -> str:
    """Keyed hash of a badge UID, normalised (hex digits upper case, separators dropped)."""
    norm = "".join(ch for ch in uid.strip().upper() if ch.isalnum())
    if not norm:
        raise DirectoryError("empty badge UID")
    return hmac.new(secret.encode(), norm.encode(), hashlib.sha256).hexdigest()


@dataclass
class Training:
    machine_class: str
    expires: datetime | None
    grace_days: float = 0.0
    supervised: bool = False


@dataclass
class Member:
    id: str
    name: str
    roles: tuple[str, ...]
    trainings: dict[str, Training] = field(default_factory=dict)

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Booking:
    id: str
    machine_id: str
    member_id: str
    starts: datetime
    ends: datetime


class Directory:
    """Read and write the cached directory; `secret` hashes raw UIDs."""

    def __init__(self, ledger: Ledger, secret: str) -> None:
        self.ledger = ledger
        self.secret = secret

    # ---- reading ----------------------------------------------------------------------------------
    def member_by_badge(self, hashed: str) -> Member | None:
        row = self.ledger.conn.execute(
            "SELECT m.* FROM badges b JOIN members m ON m.id=b.member_id WHERE b.hash=? AND m.active=1",
            (hashed,),
        ).fetchone()
        return self._member(row) if row else None

    def member(self, member_id: str) -> Member | None:
        row = self.ledger.conn.execute(
            "SELECT * FROM members WHERE id=? AND active=1", (member_id,)
        ).fetchone()
        return self._member(row) if row else None

    def reach(self, member_id: str) -> tuple[list[str], str | None]:
        """A member's own notification targets (opted in through the directory) and language; never
        published, read only by the notifier."""
        row = self.ledger.conn.execute(
            "SELECT notify_json, language FROM members WHERE id=? AND active=1", (member_id,)
        ).fetchone()
        if row is None or not row["notify_json"]:
            return [], row["language"] if row else None
        return list(json.loads(row["notify_json"])), row["language"]

    def _member(self, row: Any) -> Member:
        trainings = {
            t["machine_class"]: Training(
                t["machine_class"], parse_iso(t["expires"]) if t["expires"] else None, t["grace_days"],
                bool(t["supervised"]),
            )
            for t in self.ledger.conn.execute("SELECT * FROM trainings WHERE member_id=?", (row["id"],))
        }  # fmt: skip
        return Member(row["id"], row["name"], tuple(row["roles"].split(",")), trainings)

    def bookings(self, machine_id: str, start: datetime, end: datetime) -> list[Booking]:
        """Bookings of a machine that overlap [start, end)."""
        rows = self.ledger.conn.execute(
            "SELECT * FROM bookings WHERE machine_id=? AND starts<? AND ends>? ORDER BY starts",
            (machine_id, iso(end), iso(start)),
        )
        return [
            Booking(r["id"], r["machine_id"], r["member_id"], parse_iso(r["starts"]), parse_iso(r["ends"]))
            for r in rows
        ]

    def meta(self) -> dict[str, Any] | None:
        row = self.ledger.conn.execute("SELECT * FROM directory_meta WHERE id=1").fetchone()
        return dict(row) if row else None

    # ---- writing ----------------------------------------------------------------------------------
    def apply_snapshot(self, snap: dict[str, Any], source: str) -> int:
        """Replace the directory with a snapshot; an older version than the cache is ignored.

        Returns the version now cached. Nothing changes unless the whole snapshot is valid.
        """
        version = _version(snap, "snapshot")
        members = [_member_entry(m, i, self.secret) for i, m in enumerate(_list(snap, "members"))]
        bookings = [_booking_entry(b, i) for i, b in enumerate(_list(snap, "bookings", required=False))]
        meta = self.meta()
        if meta and meta["version"] > version:
            return int(meta["version"])
        with self.ledger.tx() as c:
            for table in ("badges", "trainings", "members", "bookings"):
                c.execute(f"DELETE FROM {table}")
            for entry in members:
                _insert_member(c, entry)
            for b in bookings:
                c.execute("INSERT OR REPLACE INTO bookings VALUES(?,?,?,?,?)", b)
            _set_meta(c, version, source)
        return version

    def apply_delta(self, delta: dict[str, Any], source: str) -> bool:
        """Apply a delta made against the cached version; False (nothing applied) when it is not."""
        version = _version(delta, "delta")
        base = delta.get("base")
        meta = self.meta()
        if meta is None or base != meta["version"]:
            return False
        upserts = [
            _member_entry(m, i, self.secret) for i, m in enumerate(_list(delta, "upsert_members", False))
        ]
        bookings = [_booking_entry(b, i) for i, b in enumerate(_list(delta, "upsert_bookings", False))]
        with self.ledger.tx() as c:
            for member_id in _list(delta, "delete_members", False):
                c.execute("DELETE FROM members WHERE id=?", (str(member_id),))
            for entry in upserts:
                c.execute("DELETE FROM members WHERE id=?", (entry["id"],))
                _insert_member(c, entry)
            for booking_id in _list(delta, "delete_bookings", False):
                c.execute("DELETE FROM bookings WHERE id=?", (str(booking_id),))
            for b in bookings:
                c.execute("INSERT OR REPLACE INTO bookings VALUES(?,?,?,?,?)", b)
            _set_meta(c, version, source)
        return True


def _version(doc: Any, what: str) -> int:
    if not isinstance(doc, dict):
        raise DirectoryError(f"{what}: expected a JSON object")
    v = doc.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DirectoryError(f"{what}.version: expected a whole number >= 0, got {v!r}")
    return v


def _list(doc: dict[str, Any], key: str, required: bool = True, where: str = "") -> list[Any]:
    name = f"{where}.{key}" if where else key
    if key not in doc:
        if required:
            raise DirectoryError(f"{name}: missing")
        return []
    if not isinstance(doc[key], list):
        raise DirectoryError(f"{name}: expected a list")
    items: list[Any] = doc[key]
    return items


def _member_entry(m: Any, index: int, secret: str) -> dict[str, Any]:
    where = f"members[{index}]"
    if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
        raise DirectoryError(f"{where}.id: expected a non-empty string")
    where = f"members[{index}] ({m['id']})"
    roles = m.get("roles", ["member"])
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
        raise DirectoryError(f"{where}.roles: expected a list of {', '.join(ROLES)}, got {roles!r}")
    badges = []
    for b in _list(m, "badges", False, where):
        if isinstance(b, dict) and isinstance(b.get("hash"), str) and len(b["hash"]) == 64:
            badges.append(b["hash"].lower())
        elif isinstance(b, str):
            badges.append(badge_hash(secret, b))
        else:
            # never the value itself: a malformed entry may still carry a raw UID (the log and audit keep it)
            raise DirectoryError(
                f'{where}.badges: expected UID strings or {{"hash": <64 hex>}}, got {type(b).__name__}'
            )
    trainings = []
    for j, t in enumerate(_list(m, "trainings", False, where)):
        if not isinstance(t, dict) or not isinstance(t.get("class"), str):
            raise DirectoryError(f"{where}.trainings[{j}].class: expected a machine class")
        expires = t.get("expires")
        if expires is not None:
            try:
                expires = iso(_aware(datetime.fromisoformat(str(expires).replace("Z", "+00:00"))))
            except ValueError:
                raise DirectoryError(
                    f"{where}.trainings[{j}].expires: expected an ISO date, got {expires!r}"
                ) from None
        grace = t.get("grace_days", 0)
        if not isinstance(grace, int | float) or grace < 0:
            raise DirectoryError(f"{where}.trainings[{j}].grace_days: expected a number >= 0")
        trainings.append((t["class"], expires, float(grace), int(bool(t.get("supervised", False)))))
    notify = m.get("notify", [])
    if not isinstance(notify, list) or not all(isinstance(u, str) and "://" in u for u in notify):
        raise DirectoryError(f"{where}.notify: expected a list of notification URLs (Apprise), e.g. mailto://…")
    language = m.get("language")
    if language is not None and language not in ("fr", "en"):
        raise DirectoryError(f"{where}.language: expected fr or en, got {language!r}")
    return {"id": m["id"], "name": str(m.get("name", m["id"])), "roles": ",".join(roles), "badges": badges,
            "trainings": trainings, "active": int(bool(m.get("active", True))),
            "notify": json.dumps(notify) if notify else None, "language": language}  # fmt: skip


def _booking_entry(b: Any, index: int) -> tuple[str, str, str, str, str]:
    where = f"bookings[{index}]"
    if not isinstance(b, dict):
        raise DirectoryError(f"{where}: expected an object")
    for key in ("id", "machine", "member", "start", "end"):
        if not isinstance(b.get(key), str):
            raise DirectoryError(f"{where}.{key}: expected a string")
    try:
        starts = _aware(datetime.fromisoformat(b["start"].replace("Z", "+00:00")))
        ends = _aware(datetime.fromisoformat(b["end"].replace("Z", "+00:00")))
    except ValueError:
        raise DirectoryError(f"{where}: start and end must be ISO times") from None
    if ends <= starts:
        raise DirectoryError(f"{where} ({b['id']}): ends before it starts")
    return (b["id"], b["machine"], b["member"], iso(starts), iso(ends))


def _aware(t: datetime) -> datetime:
    from datetime import UTC

    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _insert_member(c: sqlite3.Connection, entry: dict[str, Any]) -> None:
    c.execute(
        "INSERT INTO members(id, name, roles, active, notify_json, language) VALUES(?,?,?,?,?,?)",
        (entry["id"], entry["name"], entry["roles"], entry["active"], entry["notify"], entry["language"]),
    )
    for h in entry["badges"]:
        c.execute("INSERT OR REPLACE INTO badges VALUES(?,?)", (h, entry["id"]))
    for t in entry["trainings"]:
        c.execute("INSERT OR REPLACE INTO trainings VALUES(?,?,?,?,?)", (entry["id"], *t))


def _set_meta(c: sqlite3.Connection, version: int, source: str) -> None:
    c.execute("INSERT OR REPLACE INTO directory_meta VALUES(1,?,?,?)", (version, iso(utc_now()), source))
