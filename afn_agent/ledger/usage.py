"""The usage record: what one job used and what it costs, as the booking system receives it.

Version `afn.usage/1`, documented field by field in docs/usage-record.md; `record_schema.json` beside
this file is the machine-readable form the tests check every record against.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .. import __version__
from .tariff import Tariff, price, quantities

SCHEMA = "afn.usage/1"
RECORD_NAMESPACE = uuid.UUID("5b0e5a6c-7f1d-4c1e-9a59-3f8d7c2b6a10")  # afn-agent usage records


def record_id_for(site: str, job_id: str) -> str:
    """A job's record id, derived from the job: whatever a crash or a lost disk write makes the agent
    write again for that job carries the same id, so the booking system can never hold two bills for it."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{site}/{job_id}"))


SCHEMA_FILE = Path(__file__).with_name("record_schema.json")
STOP_OF_OUTCOME = {"completed": "normal"}  # other outcomes say their stop type themselves


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def billed_figures(figures: dict[str, Any], estimate: dict[str, Any], basis: str) -> dict[str, float]:
    """The figures a record is priced on: what was done, or (basis full) the whole job as quoted."""
    if basis != "full":
        return figures
    full = dict(figures)
    full["active_s"] = max(
        figures.get("active_s", 0.0), estimate.get("moving_s", 0.0) + estimate.get("dwell_s", 0.0)
    )
    full["heating_s"] = max(figures.get("heating_s", 0.0), estimate.get("heating_s", 0.0))
    full["material_g"] = max(figures.get("material_g", 0.0), estimate.get("material_g", 0.0))
    full["material_mm"] = max(figures.get("material_mm", 0.0), estimate.get("material_mm", 0.0))
    full["beam_on_s"] = max(figures.get("beam_on_s", 0.0), estimate.get("beam_on_s", 0.0))
    full["spindle_on_s"] = max(figures.get("spindle_on_s", 0.0), estimate.get("spindle_on_s", 0.0))
    return full


def build_record(
    record_id: str,
    job: dict[str, Any],
    machine_class: str,
    site: str,
    outcome: str,
    stop_type: str,
    reason: str,
    figures: dict[str, Any],
    tariff: Tariff,
    replayed: bool,
) -> dict[str, Any]:
    """Assemble a record from a job row, its measured figures and its machine's tariff."""
    estimate = json.loads(job["estimate_json"] or "{}")
    started = parse_iso(job["started_at"]) if job["started_at"] else utc_now()
    ended = started + timedelta(seconds=figures.get("total_s", 0.0))
    basis = tariff.basis(stop_type)
    qty = quantities(billed_figures(figures, estimate, basis))
    amount = price(tariff, qty, basis)
    per_tool = figures.get("material_per_tool", {})
    preset = figures.get("material_preset") or {}  # the loaded material's preset, when it is one
    return {
        "schema": SCHEMA,
        "record_id": record_id,
        "site": site,
        "machine": {"id": job["machine_id"], "class": machine_class},
        "member_id": job["member_id"],
        "supervisor_id": job["supervisor_id"],
        "account": job["account"],
        "booking_id": job["booking_id"],
        "session_id": job["session_id"],
        "job": {
            "id": job["id"],
            "name": job["name"],
            "sha256": job["sha256"],
            "bytes": job["bytes"],
            "source": job["source"],
            "outcome": outcome,
            "stop_type": stop_type,
            "reason": reason,
            "done_fraction": round(min(max(figures.get("done_fraction", 0.0), 0.0), 1.0), 4),
            "lines_acknowledged": int(figures.get("lines", 0)),
        },
        "start": iso(started),
        "end": iso(ended),
        "time_s": {
            k: round(figures.get(k, 0.0), 3)
            for k in ("total_s", "active_s", "heating_s", "paused_s", "waiting_s", "idle_s")
        },
        "source": figures.get("source", "machine"),
        "beam_on_s": round(figures.get("beam_on_s", 0.0), 3),
        "spindle_on_s": round(figures.get("spindle_on_s", 0.0), 3),
        "material": [
            {
                "tool": int(tool),
                "kind": figures.get("material_kind", "filament"),
                "mm": round(v.get("mm", 0.0), 3),
                "g": round(v.get("g", 0.0), 3),
                "density_g_cm3": preset.get("density_g_cm3"),
                "price_per_kg": preset.get("price_per_kg"),
            }
            for tool, v in sorted(per_tool.items(), key=lambda kv: int(kv[0]))
        ],
        "material_total": {
            "mm": round(figures.get("material_mm", 0.0), 3),
            "g": round(figures.get("material_g", 0.0), 3),
        },
        "estimate": {
            "time_s": round(estimate.get("time_s", 0.0), 3),
            "material_mm": round(estimate.get("material_mm", 0.0), 3),
            "material_g": round(estimate.get("material_g", 0.0), 3),
        },
        "tariff": tariff.snapshot(),
        "billing": {"basis": basis, "quantities": qty},
        "price": str(amount),
        "currency": tariff.currency,
        "replayed": replayed,
        "agent_version": __version__,
    }


def reprice(record: dict[str, Any]) -> str:
    """The price a record's own tariff snapshot and quantities give: equal to `record['price']`."""
    tariff = Tariff.from_snapshot(record["tariff"])
    return str(price(tariff, record["billing"]["quantities"], record["billing"]["basis"]))
