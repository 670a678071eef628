"""Alarms in the ledger: raised by the pump, cleared only by a person, and read back after a restart
(a fault's reason once vanished as soon as the machine went idle again)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..i18n import alarm_words
from .store import Ledger
from .usage import iso, utc_now

SHOWN = 5  # the latest open alarms of a machine that its status carries


class AlarmBook:
    """The `alarms` table: one row per alarm, open until `clear`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add(self, machine_id: str, kind: str, data: dict[str, Any], t: float) -> dict[str, Any]:
        """Keep an alarm; returns it as the status shows it."""
        at = iso(datetime.fromtimestamp(t, UTC))
        t = _seconds(at)  # as a restart will read it back
        with self.ledger.tx() as c:
            cur = c.execute(
                "INSERT INTO alarms(machine_id, kind, data_json, raised_at) VALUES(?,?,?,?)",
                (machine_id, kind, json.dumps(data, sort_keys=True, default=str), at),
            )
        return view(int(cur.lastrowid or 0), kind, data, t, at)

    def open(self) -> dict[str, tuple[dict[str, Any], ...]]:
        """Every machine's open alarms, oldest first, the latest SHOWN of each."""
        out: dict[str, list[dict[str, Any]]] = {}
        rows = self.ledger.conn.execute("SELECT * FROM alarms WHERE cleared_at IS NULL ORDER BY id")
        for r in rows:
            out.setdefault(r["machine_id"], []).append(
                view(r["id"], r["kind"], json.loads(r["data_json"]), _seconds(r["raised_at"]), r["raised_at"])
            )
        return {m: tuple(a[-SHOWN:]) for m, a in out.items()}

    def clear(self, machine_id: str, actor: str) -> int:
        """A person has seen the machine's alarms: they leave its status. Returns how many were open."""
        with self.ledger.tx() as c:
            return c.execute(
                "UPDATE alarms SET cleared_at=?, cleared_by=? WHERE machine_id=? AND cleared_at IS NULL",
                (iso(utc_now()), actor, machine_id),
            ).rowcount

    def history(self, machine_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Alarms of a machine, newest first, cleared or not (the manager's history)."""
        rows = self.ledger.conn.execute(
            "SELECT * FROM alarms WHERE machine_id=? ORDER BY id DESC LIMIT ?", (machine_id, limit)
        )
        return [dict(r) for r in rows]


def view(alarm_id: int, kind: str, data: dict[str, Any], t: float, at: str) -> dict[str, Any]:
    """An alarm as the status carries it: its kind, its facts, its words in each language, its time."""
    return {"id": alarm_id, "type": kind, **data, "text": alarm_words(kind, data), "t": t, "at": at}


def _seconds(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
