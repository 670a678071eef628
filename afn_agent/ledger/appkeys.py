"""Applications asking for a key, as OctoPrint's Application Keys plugin lets them (Home Assistant's set-up
dialog does): the request waits in the ledger until a manager grants or denies it from the API, the
CLI or the fleet dashboard; the key is made when the application collects it, shown once, kept as a hash.

The ledger holds the requests so the CLI, beside the running agent, decides as well as the API does.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import Enum
from typing import Any

from ..errors import Busy, InvalidInput, NotFound
from ..secret_text import new_secret
from .keys import KeyBook, digest
from .usage import iso, utc_now

REQUEST_S = 600.0  # a request waits ten minutes for a decision, then goes (the app must ask again)
PENDING_MAX = 20  # undecided requests at once: the endpoint takes anyone, so the table stays small
APP_ROLE = "viewer"  # what a granted application may do: read its machine (state, temperatures, job)


class Poll(Enum):
    """What an application polling its request learns."""

    PENDING = "pending"
    GRANTED = "granted"  # with the key, once
    GONE = "gone"  # denied, expired, collected already or never asked: OctoPrint answers 404


class AppKeyRequests:
    """The `app_key_requests` table; any thread, any process."""

    def __init__(self, book: KeyBook) -> None:
        self.book = book
        self.ledger = book.ledger

    def open(self, machine_id: str, app: Any, user: Any, origin: str) -> tuple[str, dict[str, Any]]:
        """A new request: (its secret token, given to the application only; its public row)."""
        if not isinstance(app, str) or not app.strip() or len(app) > 80:
            raise InvalidInput("app: the application's name, 1 to 80 characters")
        if user is not None and (not isinstance(user, str) or len(user) > 80):
            raise InvalidInput("user: a user name of at most 80 characters, or absent")
        token = new_secret(24)
        row = {"id": uuid.uuid4().hex[:8], "machine_id": machine_id, "app": app.strip(), "user_name": user,
               "origin": origin[:64], "created_at": iso(utc_now()),
               "expires_at": time.time() + REQUEST_S}  # fmt: skip
        with self.ledger.tx() as c:
            c.execute("DELETE FROM app_key_requests WHERE expires_at<? AND key_id IS NULL", (time.time(),))
            waiting = c.execute(
                "SELECT COUNT(*) FROM app_key_requests WHERE decision IS NULL AND expires_at>?",
                (time.time(),),
            ).fetchone()[0]
            if waiting >= PENDING_MAX:
                raise Busy(f"{waiting} key requests already wait for a manager; try again later")
            c.execute(
                "INSERT INTO app_key_requests(id, token_hash, machine_id, app, user_name, origin, "
                "created_at, expires_at) VALUES(:id, :token_hash, :machine_id, :app, :user_name, :origin, "
                ":created_at, :expires_at)",
                {**row, "token_hash": digest(token)},
            )
        return token, row

    def pending(self) -> list[dict[str, Any]]:
        """Requests waiting for a decision, oldest first (what a manager is shown)."""
        rows = self.ledger.conn.execute(
            "SELECT id, machine_id, app, user_name, origin, created_at, expires_at FROM app_key_requests "
            "WHERE decision IS NULL AND expires_at>? ORDER BY created_at",
            (time.time(),),
        )
        return [dict(r) for r in rows]

    def decide(
        self, request_id: str, grant: bool, actor: str, machine_id: str | None = None
    ) -> dict[str, Any]:
        """Grant or deny a waiting request (on `machine_id` when given); NotFound if none waits."""
        with self.ledger.tx() as c:
            done = c.execute(
                "UPDATE app_key_requests SET decision=?, decided_by=?, decided_at=? "
                "WHERE id=? AND decision IS NULL AND expires_at>? AND machine_id=coalesce(?, machine_id)",
                ("granted" if grant else "denied", actor, iso(utc_now()), request_id, time.time(),
                 machine_id),
            ).rowcount
            row = c.execute("SELECT * FROM app_key_requests WHERE id=?", (request_id,)).fetchone()
        if not done or row is None:
            raise NotFound(f"no key request {request_id!r} waits for a decision (decided, expired, unknown)")
        return {k: row[k] for k in ("id", "machine_id", "app", "user_name", "decision", "decided_by")}

    def poll(self, token: str) -> tuple[Poll, str | None, dict[str, Any] | None]:
        """(what the application learns, its key once granted, the request's row)."""
        row = self.ledger.conn.execute(
            "SELECT * FROM app_key_requests WHERE token_hash=?", (digest(token),)
        ).fetchone()
        if row is None or row["decision"] == "denied" or row["key_id"] is not None:
            return Poll.GONE, None, None
        if row["expires_at"] <= time.time():
            return Poll.GONE, None, None
        if row["decision"] is None:
            return Poll.PENDING, None, dict(row)
        return self._collect(dict(row))

    def _collect(self, row: dict[str, Any]) -> tuple[Poll, str | None, dict[str, Any] | None]:
        """Make the granted key, once: the row is claimed in the same transaction as the key is written."""
        name = f"{row['app']} ({row['user_name']})" if row["user_name"] else row["app"]
        key, key_row = self.book.new(name[:80], APP_ROLE, f"appkey:{row['decided_by']}",
                                     machines=(row["machine_id"],))  # fmt: skip
        with self.ledger.tx() as c:
            claimed = c.execute(
                "UPDATE app_key_requests SET key_id=? WHERE id=? AND key_id IS NULL",
                (key_row["id"], row["id"]),
            ).rowcount
            if not claimed:
                return Poll.GONE, None, None  # another poll collected it a moment ago
            self.book.insert(c, key, key_row)
        return Poll.GRANTED, key, {**row, "key_id": key_row["id"]}


def describe(row: dict[str, Any]) -> str:
    """One line for a manager (CLI): id, machine, application, user, when."""
    user = f" for {row['user_name']}" if row.get("user_name") else ""
    origin, app = row.get("origin") or "?", json.dumps(row["app"])
    return f"{row['id']}  {row['machine_id']}  {app}{user}  from {origin}  at {row['created_at']}"
