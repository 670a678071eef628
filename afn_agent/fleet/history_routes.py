"""The history page's routes on the fleet dashboard: records by page and filter, one record with its
job's events in words, and the CSV `afn-agent ledger export` would write for the same period. For a
signed-in manager only (members' ids and prices)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import StreamingResponse

from ..ledger.db import MAX_INTEGER
from ..ledger.export import parse_day
from .history import BUCKETS, OUTCOMES, PAGE, Filter, History
from .view import event_view

PERIODS = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}


def read_filter(request: Request, labs: tuple[str, ...]) -> Filter:
    """The query's filter within the reader's labs; a bad date or outcome is a 422 that names the
    parameter, another lab's a 403."""
    q = request.query_params
    try:
        since = parse_day(q["since"], "since") if q.get("since") else None
        until = parse_day(q["until"], "until") if q.get("until") else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    outcome = q.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise HTTPException(422, f"outcome: one of {', '.join(OUTCOMES)}, got {outcome[:40]!r}")
    short = {k: (q.get(k) or None) for k in ("member", "machine", "lab")}
    if any(v is not None and len(v) > 80 for v in short.values()):
        raise HTTPException(422, "member, machine and lab: at most 80 characters")
    if short["lab"] is not None and short["lab"] not in labs:
        raise HTTPException(403, f"lab {short['lab']!r} is not one of yours")
    return Filter(since=since, until=until, outcome=outcome, labs=labs, **short)


def add_history_routes(
    app: FastAPI,
    history: History | None,
    labs_of: Callable[[Request], tuple[str, ...] | None],
    names: dict[str, str],
) -> None:
    """`labs_of(request)`: the labs the signed-in manager sees, None when nobody is signed in."""

    def store(request: Request) -> History:
        if labs_of(request) is None:
            raise HTTPException(401, "sign in as a manager first")
        if history is None:
            raise HTTPException(404, "this dashboard keeps no history ([fleet] data_dir)")
        return history

    def reader(request: Request) -> tuple[History, Filter]:
        h = store(request)
        return h, read_filter(request, labs_of(request) or ())

    @app.get("/api/history")
    def page(request: Request, after_end: str | None = None, after_id: str | None = None,
             limit: int = PAGE) -> dict[str, Any]:  # fmt: skip
        """Newest first; the next page starts after the last row's (end, record id)."""
        h, which = reader(request)
        after = (after_end, after_id) if after_end and after_id else None
        out = h.page(which, after, limit)
        out["total"] = h.count(which)
        for record in out["records"]:
            record["member_name"] = names.get(record.get("member_id") or "")
        return out

    @app.get("/api/history.csv")
    def export(request: Request) -> StreamingResponse:
        h, which = reader(request)
        saved_as = {"Content-Disposition": 'attachment; filename="usage.csv"'}
        return StreamingResponse(h.csv(which), media_type="text/csv; charset=utf-8", headers=saved_as)

    @app.get("/api/charts/utilisation")
    def utilisation(request: Request, period: str = "day") -> dict[str, Any]:
        """Seconds per bucket (busy, heating, waiting for a person, idle, down) per machine and per class
        over the last day, week or month, from the state changes the dashboard saw."""
        if period not in PERIODS:
            raise HTTPException(422, f"period: one of {', '.join(PERIODS)}, got {period[:20]!r}")
        end = time.time()
        machines = store(request).utilisation(end - PERIODS[period], end, labs_of(request) or ())
        classes: dict[str, dict[str, float]] = {}
        labs: dict[str, dict[str, float]] = {}
        for row in machines.values():
            for table, name in ((classes, row["class"] or ""), (labs, row["lab"])):
                total = table.setdefault(name, dict.fromkeys((*BUCKETS, "unknown"), 0.0))
                for bucket in total:
                    total[bucket] += row[bucket]
        return {"period": period, "from": end - PERIODS[period], "to": end, "buckets": [*BUCKETS, "unknown"],
                "machines": machines, "classes": classes, "labs": labs}  # fmt: skip

    @app.get("/api/charts/days")
    def days(request: Request, days: int = 30) -> dict[str, Any]:
        """Jobs, busy hours and revenue per day over the last `days` days (at most a year)."""
        since = datetime.now(UTC).date() - timedelta(days=max(1, min(days, 366)) - 1)
        per_day = store(request).per_day(since.isoformat(), labs_of(request) or ())
        return {"since": since.isoformat(), "days": per_day}

    @app.get("/api/history/{record_id}")
    def one(record_id: str, request: Request) -> dict[str, Any]:
        """A record with its job's events as sentences (the link from a history row)."""
        found = store(request).record(record_id[:64], labs_of(request) or ())
        if found is None:
            raise HTTPException(404, f"no record {record_id[:64]!r}")
        record, events = found
        h = store(request)
        pictures = h.pictures_of(str(record["job"].get("id") or ""))
        for p in pictures:
            p["url"] = f"/api/history/pictures/{p['id']}.jpg"
        said = [event_view(e, names, True) for e in events]
        return {"record": record, "events": said, "pictures": pictures}

    @app.get("/api/history/pictures/{picture_id}.jpg")
    def picture(request: Request, picture_id: int = Path(ge=1, le=MAX_INTEGER)) -> Response:
        jpeg = store(request).picture_jpeg(picture_id, labs_of(request) or ())
        if jpeg is None:
            raise HTTPException(404, f"no picture {picture_id}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
