"""The ledger alone: schema, state machine, pricing, outbox, export; no machine, no broker."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afn_agent.ledger import IllegalTransition, JobClock, Ledger, LedgerError, Tariff, TariffError
from afn_agent.ledger.db import MIGRATIONS
from afn_agent.ledger.export import export, parse_day
from afn_agent.ledger.tariff import STOP_TYPES, price, quantities
from afn_agent.ledger.usage import SCHEMA_FILE, reprice

SCHEMA = json.loads(SCHEMA_FILE.read_text())
FIGURES = {
    "total_s": 600.0, "active_s": 480.0, "heating_s": 90.0, "paused_s": 30.0, "idle_s": 0.0,
    "material_per_tool": {"0": {"mm": 1000.0, "g": 2.98}, "1": {"mm": 10.0, "g": 0.03}},
    "material_mm": 1010.0, "material_g": 3.01, "material_kind": "PLA", "beam_on_s": 0.0, "spindle_on_s": 0.0,
    "done_fraction": 0.5, "lines": 1234,
}  # fmt: skip
TARIFF = Tariff.from_snapshot(
    {
        "name": "printer",
        "per_active_minute": "0.10",
        "per_gram": "0.05",
        "minimum": "0.50",
        "rounding": "0.05",
        "policy": {"fault": "none", "cancelled": "full"},
    }
)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite3", site="fablab")
    led.upsert_machine("printer-1", "fdm-printer", "marlin2")
    yield led
    led.close()


def new_job(ledger, **kw):
    estimate = {"time_s": 700.0, "moving_s": 600.0, "heating_s": 100.0, "dwell_s": 0.0, "material_mm": 2000.0,
                "material_g": 6.0, "beam_on_s": 0.0, "spindle_on_s": 0.0}  # fmt: skip
    return ledger.add_job("printer-1", "/spool/a.gcode", "a.gcode", "ab" * 32, 1234, "test", estimate,
                          member_id="m-1", **kw)  # fmt: skip


def test_database_is_wal_with_full_sync_and_migrated(ledger, tmp_path):
    conn = ledger.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    Ledger(tmp_path / "ledger.sqlite3").close()  # opening again migrates nothing and keeps data
    assert ledger.machine("printer-1")["class"] == "fdm-printer"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(LedgerError, match="newer than this agent"):
        Ledger(path)


def test_state_machine_refuses_illegal_moves(ledger):
    job = new_job(ledger)
    with pytest.raises(IllegalTransition, match="queued -> running is not allowed"):
        ledger.transition(job, "running", "test")
    ledger.transition(job, "starting", "test")
    ledger.transition(job, "heating", "test")
    ledger.transition(job, "running", "test")
    ledger.transition(job, "paused", "test")
    with pytest.raises(IllegalTransition):
        ledger.finish(
            job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer"
        )  # paused jobs do not complete
    ledger.transition(job, "running", "test")
    ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
    with pytest.raises(IllegalTransition, match="it has ended"):
        ledger.transition(job, "running", "test")
    causes = [(t["from_state"], t["to_state"]) for t in ledger.transitions(job)]
    assert causes[0] == ("new", "queued") and causes[-1] == ("running", "completed")
    assert all(t["at"].endswith("Z") for t in ledger.transitions(job))


def test_finish_twice_bills_once(ledger):
    job = new_job(ledger)
    ledger.transition(job, "starting", "test")
    first = ledger.finish(job, "failed", "fault", "thermal runaway", FIGURES, TARIFF, "fdm-printer")
    again = ledger.finish(job, "failed", "fault", "thermal runaway", FIGURES, TARIFF, "fdm-printer")
    assert first == again
    assert len(ledger.usage_after()) == 1
    assert ledger.outbox_pending() == 1


def test_record_matches_its_schema_and_prices(ledger):
    job = new_job(ledger, account="proj-7", booking_id="b-3")
    ledger.transition(job, "starting", "test")
    rec = ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
    jsonschema.validate(rec, SCHEMA)
    # 8 active minutes x 0.10 + 3.01 g x 0.05 = 0.9505 -> rounded to 0.05: 0.95
    assert rec["price"] == "0.95" and rec["billing"]["basis"] == "done_part"
    plain = {"density_g_cm3": None, "price_per_kg": None}  # a label, not a preset: no density or price of its own
    assert rec["material"] == [{"tool": 0, "kind": "PLA", "mm": 1000.0, "g": 2.98, **plain},
                               {"tool": 1, "kind": "PLA", "mm": 10.0, "g": 0.03, **plain}]  # fmt: skip
    assert rec["account"] == "proj-7" and rec["booking_id"] == "b-3"


def test_policy_bases(ledger):
    fault, cancel = new_job(ledger), new_job(ledger)
    for job in (fault, cancel):
        ledger.transition(job, "starting", "test")
    r1 = ledger.finish(fault, "failed", "fault", "MAXTEMP", FIGURES, TARIFF, "fdm-printer")
    r2 = ledger.finish(cancel, "cancelled", "cancelled", "member", FIGURES, TARIFF, "fdm-printer")
    assert (r1["billing"]["basis"], r1["price"]) == ("none", "0.00")
    # full: the quoted job (600 s moving + 0 dwell = 10 min, 6 g) -> 1.00 + 0.30
    assert (r2["billing"]["basis"], r2["price"]) == ("full", "1.30")


def test_minimum_and_rounding_up():
    t = Tariff.from_snapshot(
        {"per_active_minute": "0.07", "minimum": "0.50", "rounding": "0.10", "rounding_mode": "up"}
    )
    assert price(t, quantities({"active_s": 60}), "done_part") == Decimal("0.50")
    assert price(t, quantities({"active_s": 600}), "done_part") == Decimal("0.70")
    assert price(t, quantities({"active_s": 610}), "done_part") == Decimal("0.80")


@pytest.mark.parametrize(
    ("snap", "message"),
    [
        ({"per_gram": "-1"}, "per_gram: expected a number >= 0"),
        ({"per_gram": "abc"}, "per_gram: expected a number"),
        ({"per_minute": 1}, "per_minute: unknown field"),
        ({"rounding": 0}, "rounding: must be above 0"),
        ({"policy": {"fault": "half"}}, "policy.fault: expected one of"),
        ({"policy": {"crash": "none"}}, "policy.crash: unknown stop type"),
        ({"rounding_mode": "down"}, "rounding_mode"),
    ],
)
def test_tariff_errors_name_the_field(snap, message):
    with pytest.raises(TariffError, match=message):
        Tariff.from_snapshot(snap)


money = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False)
secs = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.tuples(*[money] * 7),
    minimum=money,
    rounding=st.sampled_from(["0.01", "0.05", "0.1", "0.25", "1"]),
    mode=st.sampled_from(["nearest", "up"]),
    stop=st.sampled_from(STOP_TYPES),
    basis=st.sampled_from(["full", "done_part", "none"]),
    figures=st.fixed_dictionaries(
        {
            k: secs
            for k in (
                "active_s",
                "heating_s",
                "paused_s",
                "material_g",
                "material_mm",
                "beam_on_s",
                "spindle_on_s",
            )
        }
    ),
)
def test_price_is_reproducible_from_the_record_alone(
    tmp_path_factory, rates, minimum, rounding, mode, stop, basis, figures
):
    names = ("per_active_minute", "per_heating_minute", "per_paused_minute", "per_gram", "per_metre",
             "per_beam_minute", "per_spindle_minute")  # fmt: skip
    tariff = Tariff.from_snapshot({**dict(zip(names, map(str, rates), strict=True)), "minimum": str(minimum),
                                   "rounding": rounding, "rounding_mode": mode, "policy": {stop: basis}})  # fmt: skip
    from afn_agent.ledger.usage import build_record

    job = {"id": "j", "machine_id": "m", "member_id": None, "supervisor_id": None, "account": None,
           "booking_id": None, "session_id": None, "name": "a", "sha256": "0" * 64, "bytes": 1, "source": "t",
           "started_at": "2026-11-26T10:00:00.000Z", "estimate_json": json.dumps({"moving_s": 100.0, "material_g": 3})}  # fmt: skip
    rec = build_record(
        "00000000-0000-4000-8000-000000000000",
        job,
        "c",
        "s",
        "failed",
        stop,
        "",
        {**figures, "total_s": 1.0},
        tariff,
        False,
    )
    rec = json.loads(json.dumps(rec))  # what a receiver parses
    assert reprice(rec) == rec["price"]
    assert Decimal(rec["price"]) % Decimal(rounding) == 0
    if rec["billing"]["basis"] == "none":
        assert Decimal(rec["price"]) == 0
    else:  # the minimum holds, give or take the rounding step
        assert Decimal(rec["price"]) >= minimum - Decimal(rounding)


def test_clock_splits_time_by_state():
    clock = JobClock("starting", 0.0)
    clock.move("heating", 2.0)
    clock.move("running", 32.0)
    clock.move("paused", 92.0)
    clock.move("running", 102.0)
    clock.move("waiting", 112.0)  # a tool change: a person is awaited
    clock.move("running", 142.0)
    split = clock.split(152.0)
    assert split == {"idle_s": 2.0, "heating_s": 30.0, "active_s": 80.0, "paused_s": 10.0, "waiting_s": 30.0,
                     "total_s": 152.0}  # fmt: skip
    assert clock.split(111.0)["total_s"] == 152.0, "a clock never runs backwards"


def test_outbox_backoff_ack_and_cursor(ledger):
    job = new_job(ledger)
    ledger.transition(job, "starting", "t")
    rec = ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
    ev = ledger.outbox_add("event", "printer-1", {"type": "fault"})
    due = ledger.outbox_due(now=1000.0)
    assert [r["kind"] for r in due] == ["usage", "event"]
    for row in due:
        ledger.outbox_tried(row["seq"], now=1000.0)
    assert ledger.outbox_due(now=1001.0) == []
    assert len(ledger.outbox_due(now=1002.1)) == 2  # first retry after 2 s
    ledger.outbox_published(ev, final=True)
    usage_seq = due[0]["seq"]
    ledger.outbox_published(usage_seq, final=False)  # the broker has it; the booking system not yet
    ledger.outbox_tried(usage_seq, now=1003.0)  # second try: 4 s
    assert ledger.outbox_due(now=1006.0) == [] and len(ledger.outbox_due(now=1007.1)) == 1
    assert ledger.undelivered() == 1
    assert ledger.acknowledge(rec["record_id"]) and not ledger.acknowledge("no-such-id")
    assert ledger.undelivered() == 0 and ledger.outbox_pending() == 0
    ((cursor, got),) = ledger.usage_after(0)
    assert got == rec and ledger.usage_after(cursor) == []


def test_nonces_are_used_once(ledger):
    assert ledger.use_nonce("n1", 2e9) and not ledger.use_nonce("n1", 2e9)


def test_export_csv_and_json(ledger):
    job = new_job(ledger)
    ledger.transition(job, "starting", "t")
    rec = ledger.finish(job, "completed", "normal", "", FIGURES, TARIFF, "fdm-printer")
    text = export(ledger, parse_day("2000-01-01", "--since"), None, "csv")
    header, row = text.splitlines()
    assert (
        header.startswith("record_id,end,start,machine") and rec["record_id"] in row and ",0.95,EUR," in row
    )
    assert json.loads(export(ledger, parse_day("2000-01-01", "--since"), None, "json")) == [rec]
    assert export(ledger, parse_day("2999-01-01", "--since"), None, "json").strip() == "[]"
    with pytest.raises(ValueError, match="--since: expected a date"):
        parse_day("last month", "--since")
