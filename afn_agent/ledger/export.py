"""Month-end export of usage records, for a manager to check against the booking system."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from .store import Ledger
from .usage import iso

CSV_COLUMNS = (
    "record_id", "end", "start", "machine", "machine_class", "member_id", "supervisor_id", "account",
    "booking_id", "job_name", "outcome", "stop_type", "done_fraction", "total_s", "active_s", "heating_s",
    "paused_s", "waiting_s", "idle_s", "material_mm", "material_g", "beam_on_s", "spindle_on_s", "basis",
    "price", "currency", "replayed",
)  # fmt: skip


def parse_day(text: str, option: str) -> str:
    """`2026-11-01` or a full ISO time (UTC unless it says), as the ledger writes times."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option}: expected a date like 2026-11-01, got {text!r}") from None
    return iso(when if when.tzinfo else when.replace(tzinfo=UTC))


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a record (per-tool material summed; the JSON export keeps it all)."""
    t = record["time_s"]
    return {
        "record_id": record["record_id"],
        "end": record["end"],
        "start": record["start"],
        "machine": record["machine"]["id"],
        "machine_class": record["machine"]["class"],
        "member_id": record["member_id"],
        "supervisor_id": record["supervisor_id"],
        "account": record["account"],
        "booking_id": record["booking_id"],
        "job_name": record["job"]["name"],
        "outcome": record["job"]["outcome"],
        "stop_type": record["job"]["stop_type"],
        "done_fraction": record["job"]["done_fraction"],
        **{k: t.get(k, 0.0) for k in ("total_s", "active_s", "heating_s", "paused_s", "waiting_s", "idle_s")},
        "material_mm": record["material_total"]["mm"],
        "material_g": record["material_total"]["g"],
        "beam_on_s": record["beam_on_s"],
        "spindle_on_s": record["spindle_on_s"],
        "basis": record["billing"]["basis"],
        "price": record["price"],
        "currency": record["currency"],
        "replayed": record["replayed"],
    }


def export(ledger: Ledger, since: str, until: str | None, fmt: str) -> str:
    records = ledger.usage_between(since, until)
    if fmt == "json":
        return json.dumps(records, indent=1, sort_keys=True) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(flat(record))
    return out.getvalue()
