"""API keys kept in the ledger: a member's own slicer keys, minted from their session at the machine,
and keys a manager adds to a running agent (`afn-agent api-key --config`). Only a key's SHA-256 is
kept; the key itself is shown once, when it is made."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
import uuid
from typing import Any

from ..errors import InvalidInput
from ..secret_text import new_secret
from .store import Ledger
from .usage import iso, utc_now

ROLES = ("slicer", "manager", "booking", "kiosk", "viewer")  # kiosk: a paired tablet, one machine's console;
# viewer: an application granted through the AppKeys flow (Home Assistant), reads its machine only
PAIRING_S = 600.0  # a pairing code is good for ten minutes, once
PER_MEMBER = 10  # live keys a member may hold at once (a laptop, a phone, …)


class KeyRefused(InvalidInput):
    """A key that may not be made; the message says why."""

    code = "key-refused"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyBook:
    """The `api_keys` table; any thread, any process (the CLI writes it beside a running agent)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add(
        self,
        name: str,
        role: str,
        created_by: str,
        member_id: str | None = None,
        machines: tuple[str, ...] = (),
    ) -> tuple[str, dict[str, Any]]:
        """A new key: (the key, shown once; its row without the hash)."""
        key, row = self.new(name, role, created_by, member_id, machines)
        with self.ledger.tx() as c:
            self.insert(c, key, row)
        return key, public(row)

    def new(
        self,
        name: str,
        role: str,
        created_by: str,
        member_id: str | None = None,
        machines: tuple[str, ...] = (),
    ) -> tuple[str, dict[str, Any]]:
        """A key and its row, checked and not yet written (`insert` writes it in the caller's transaction)."""
        if role not in ROLES:
            raise KeyRefused(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name.strip() or len(name) > 80:
            raise KeyRefused("a key needs a name of 1 to 80 characters (e.g. 'ana laptop')")
        if member_id is not None and len(self.list(member_id)) >= PER_MEMBER:
            raise KeyRefused(f"{member_id} already holds {PER_MEMBER} keys; revoke one first")
        row = {"id": str(uuid.uuid4()), "name": name.strip(), "role": role, "member_id": member_id,
               "machines_json": json.dumps(list(machines)), "created_at": iso(utc_now()),
               "created_by": created_by}  # fmt: skip
        return new_secret(32), row

    @staticmethod
    def insert(c: sqlite3.Connection, key: str, row: dict[str, Any]) -> None:
        c.execute(
            "INSERT INTO api_keys(id, name, role, member_id, machines_json, sha256, created_at, "
            "created_by) VALUES(:id, :name, :role, :member_id, :machines_json, :sha, :created_at, "
            ":created_by)",
            {**row, "sha": digest(key)},
        )

    def find(self, sha256: str) -> dict[str, Any] | None:
        """The live key with that hash (None if unknown or revoked)."""
        row = self.ledger.conn.execute(
            "SELECT * FROM api_keys WHERE sha256=? AND revoked_at IS NULL", (sha256,)
        ).fetchone()
        return dict(row) if row else None

    def list(self, member_id: str | None = None) -> list[dict[str, Any]]:
        """Live keys (one member's, or all), newest first, without their hashes."""
        sql, args = "SELECT * FROM api_keys WHERE revoked_at IS NULL", []
        if member_id is not None:
            sql, args = sql + " AND member_id=?", [member_id]
        return [public(dict(r)) for r in self.ledger.conn.execute(sql + " ORDER BY created_at DESC", args)]

    def get(self, key_id: str) -> dict[str, Any] | None:
        row = self.ledger.conn.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
        return public(dict(row)) if row else None

    def revoke(self, key_id: str, actor: str) -> bool:
        with self.ledger.tx() as c:
            return (
                c.execute(
                    "UPDATE api_keys SET revoked_at=?, revoked_by=? WHERE id=? AND revoked_at IS NULL",
                    (iso(utc_now()), actor, key_id),
                ).rowcount
                == 1
            )


def new_pairing_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


class Pairing:
    """One-time codes that pair a screen (a tablet at the machine) to one machine's console. The code is
    kept as a hash; using it makes a `kiosk` key for that machine only, revocable like any key."""

    def __init__(self, book: KeyBook) -> None:
        self.book = book

    def code(self, machine_id: str, actor: str) -> str:
        """Six digits, shown to a manager (API, CLI), good for PAIRING_S, once."""
        code = new_pairing_code()
        self.expect(machine_id, digest(code), actor)
        return code

    def expect(self, machine_id: str, code_sha256: str, actor: str) -> None:
        """A code made elsewhere (the fleet dashboard shows it; only its hash travels, signed, on the bus)."""
        if not re.fullmatch(r"[0-9a-f]{64}", code_sha256):
            raise InvalidInput("code_sha256: expected 64 lower-case hex digits")
        with self.book.ledger.tx() as c:
            row = (code_sha256, machine_id, time.time() + PAIRING_S, actor)
            c.execute("INSERT OR REPLACE INTO pairing_codes(code_hash, machine_id, expires_at, created_by) "
                      "VALUES(?,?,?,?)", row)  # fmt: skip

    def pair(self, code: str, device: str) -> tuple[str, dict[str, Any]] | None:
        """The device's key and its row, or None (unknown, used or expired code)."""
        code_hash = digest(code)
        with self.book.ledger.tx() as c:
            row = c.execute(
                "SELECT * FROM pairing_codes WHERE code_hash=? AND used_at IS NULL AND expires_at>?",
                (code_hash, time.time()),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE pairing_codes SET used_at=? WHERE code_hash=?", (iso(utc_now()), code_hash))
        key, key_row = self.book.add(f"screen {device}"[:80], "kiosk", f"pairing:{row['created_by']}",
                                     machines=(row["machine_id"],))  # fmt: skip
        with self.book.ledger.tx() as c:
            c.execute("UPDATE pairing_codes SET key_id=? WHERE code_hash=?", (key_row["id"], code_hash))
        return key, key_row


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A key's row as the API shows it: never its hash."""
    out = {k: v for k, v in row.items() if k not in ("sha256", "machines_json")}
    out["machines"] = json.loads(row.get("machines_json") or "[]")
    return out
