"""Badge in at a machine, through the path a real read takes: reader -> directory -> decision -> session."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from afn_agent.access.directory import badge_hash
from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import wait_for, write_config

SECRET = "site-badge-secret-0123456789"
NOW = datetime.now(UTC)
UIDS = {"ana": "0A00123456", "bob": "0A00BBBBBB", "cid": "0A00CCCCCC", "dan": "0A00DDDDDD",
        "eve": "0A00EEEEEE", "tom": "0A00777777", "max": "0A00999999", "zed": "0A00ABCDEF"}  # fmt: skip


def day(offset: float) -> str:
    return (NOW + timedelta(days=offset)).isoformat()


def snapshot(version=1, bookings=(), **changes):
    members = [
        {"id": "ana", "name": "Ana", "badges": [UIDS["ana"]], "trainings": [{"class": "fdm-printer", "expires": day(365)}]},
        {"id": "bob", "name": "Bob", "badges": [UIDS["bob"]], "trainings": []},
        {"id": "cid", "name": "Cid", "badges": [UIDS["cid"]], "trainings": [{"class": "fdm-printer", "expires": day(-10)}]},
        {"id": "dan", "name": "Dan", "badges": [UIDS["dan"]],
         "trainings": [{"class": "fdm-printer", "expires": day(-2), "grace_days": 7}]},
        {"id": "eve", "name": "Eve", "badges": [UIDS["eve"]],
         "trainings": [{"class": "fdm-printer", "expires": day(90), "supervised": True}]},
        {"id": "tom", "name": "Tom", "roles": ["member", "trainer"], "badges": [UIDS["tom"]],
         "trainings": [{"class": "fdm-printer", "expires": day(365)}]},
        {"id": "max", "name": "Max", "roles": ["manager"], "badges": [UIDS["max"]], "trainings": []},
    ]  # fmt: skip
    for member in members:
        member.update(changes.get(member["id"], {}))
    return {"version": version, "members": members, "bookings": list(bookings)}


def booking(bid, member, start_h, end_h, machine="printer-1"):
    """A booking relative to now (the moment the test runs, not the moment the module was imported)."""
    now = datetime.now(UTC)
    return {"id": bid, "machine": machine, "member": member,
            "start": (now + timedelta(hours=start_h)).isoformat(), "end": (now + timedelta(hours=end_h)).isoformat()}  # fmt: skip


@pytest.fixture
def badge_printer(tmp_path, start_sim):
    agents = []

    def make(access_extra: str = "", machine_extra: dict | None = None, snap=None):
        sim = start_sim("marlin", speed=10)
        machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "reader": "sim", **(machine_extra or {})}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", [machine])
        path.write_text(
            path.read_text()
            + f'\n[access]\nbadge_secret = "{SECRET}"\nsupervisor_window_s = 5\ndebounce_s = 0.2\n'
            + access_extra
        )
        agent = Agent(load_config(path)).start()
        agents.append(agent)
        agent.access.directory.apply_snapshot(snap or snapshot(), "test")
        assert agent.machines["printer-1"].wait_ready(15)
        return agent

    yield make
    for agent in agents:
        agent.stop()


def read_badge(agent, who_or_uid: str, machine="printer-1") -> dict:
    """Hold a card to the machine's (simulated) reader; the audit row of the decision."""
    uid = UIDS.get(who_or_uid, who_or_uid)

    def badge_rows() -> list[dict]:
        return [r for r in agent.ledger.audit_log(machine, 1000) if r["action"] == "badge"]

    before = len(badge_rows())
    agent.access.sim_reader(machine).present(uid)
    rows = wait_for(lambda: len(rows := badge_rows()) > before and rows, 5, "a badge decision")
    time.sleep(0.3)  # real time: a repeat of the same card inside the debounce is not a new read
    return {**rows[0], **json.loads(rows[0]["detail_json"])}


def test_allowed_opens_a_session_until_the_next_booking(badge_printer):
    bob = booking("b1", "bob", 2, 3)
    agent = badge_printer(snap=snapshot(bookings=[bob]))
    d = read_badge(agent, "ana")
    assert (d["result"], d["action"], d["member_name"]) == ("allowed", "opened", "Ana")
    session = agent.access.sessions.current("printer-1")
    assert session["member_id"] == "ana"
    assert abs(
        datetime.fromisoformat(session["allowed_until"].replace("Z", "+00:00"))
        - datetime.fromisoformat(bob["start"])
    ) < timedelta(milliseconds=2)
    assert read_badge(agent, "ana")["action"] == "badge-out"
    assert agent.access.sessions.current("printer-1") is None


@pytest.mark.parametrize(
    ("who", "code"), [("zed", "unknown_badge"), ("bob", "not_trained"), ("cid", "training_expired")]
)
def test_refusals(badge_printer, who, code):
    agent = badge_printer()
    d = read_badge(agent, who)
    assert (d["result"], d["action"]) == (code, "refused")
    assert agent.access.sessions.current("printer-1") is None


def test_grace_period_allows_an_expired_training(badge_printer):
    assert read_badge(badge_printer(), "dan")["result"] == "allowed"


def test_supervised_first_use_needs_a_trainer_badge(badge_printer):
    agent = badge_printer()
    d = read_badge(agent, "eve")
    assert (d["result"], d["action"]) == ("supervisor_required", "waiting-supervisor")
    refused = read_badge(agent, "ana")  # a member is no supervisor
    assert refused["action"] == "refused" and agent.access.sessions.current("printer-1") is None
    ok = read_badge(agent, "tom")
    assert (ok["result"], ok["action"], ok["supervisor"]) == ("allowed", "opened", "tom")
    assert agent.access.sessions.current("printer-1")["supervisor_id"] == "tom"


def test_supervision_window_expires(badge_printer):
    agent = badge_printer()
    read_badge(agent, "eve")
    time.sleep(6.5)  # real time: supervisor_window_s = 5 must pass (the idle pass checks every second)
    d = read_badge(agent, "tom")
    assert d["member_id"] == "tom" and d["action"] == "opened", "tom opens his own session, not eve's"


def test_booked_by_other(badge_printer):
    agent = badge_printer(snap=snapshot(bookings=[booking("b1", "ana", -0.5, 1)]))
    assert read_badge(agent, "dan")["result"] == "booked_by_other"
    assert read_badge(agent, "ana")["result"] == "allowed"
    assert agent.access.sessions.current("printer-1")["booking_id"] == "b1"


def test_booking_required(badge_printer):
    agent = badge_printer(
        machine_extra={"booking_required": True}, snap=snapshot(bookings=[booking("b2", "dan", -0.1, 1)])
    )
    assert read_badge(agent, "ana")["result"] in ("booking_required", "booked_by_other")
    assert read_badge(agent, "dan")["result"] == "allowed"


def test_booking_required_without_any_booking(badge_printer):
    agent = badge_printer(machine_extra={"booking_required": True})
    assert read_badge(agent, "ana")["result"] == "booking_required"
    assert read_badge(agent, "max")["result"] == "allowed", "managers need no booking"


def test_outside_opening_hours(badge_printer):
    local = datetime.now().astimezone()
    window = '"01:00-01:30"' if local.hour >= 12 else '"22:00-22:30"'
    days = "".join(f"{d} = {window}\n" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    agent = badge_printer(access_extra="[access.opening_hours]\n" + days)
    assert read_badge(agent, "ana")["result"] == "outside_opening_hours"
    assert read_badge(agent, "max")["result"] == "allowed"


def test_machine_locked_and_lock_waits_for_the_running_job(badge_printer, tmp_path):
    agent = badge_printer()
    agent.control.lock("printer-1", "max", "nozzle change")
    assert read_badge(agent, "ana")["result"] == "machine_locked"
    agent.control.unlock("printer-1", "max")
    assert read_badge(agent, "ana")["action"] == "opened"
    job = circle_gcode(tmp_path / "j.gcode", 3000, 0.05, centre=(110, 110))
    submit(agent.config, agent.ledger, "printer-1", job, "upload", held=True, member_id="ana")
    wait_for(lambda: agent.machines["printer-1"].state == "printing", 10, "the job printing")
    assert agent.control.lock("printer-1", "max", "belt") == "locked when the running job ends"
    assert agent.ledger.machine("printer-1")["locked"] == 0
    assert agent.wait_idle("printer-1", 60)
    assert agent.ledger.machine("printer-1")["locked"] == 1  # applied with the job's end, under one lock
    assert agent.ledger.jobs("printer-1")[0]["state"] == "completed"


def test_job_overruns_the_next_booking(badge_printer, tmp_path):
    agent = badge_printer(snap=snapshot(bookings=[booking("b3", "bob", 0.25, 1)]))  # free for 15 minutes
    heavy = circle_gcode(
        tmp_path / "long.gcode", 30000, 0.02, centre=(110, 110), feed=30
    )  # 600 mm at 0.5 mm/s
    _, quote = submit(agent.config, agent.ledger, "printer-1", heavy, "upload", held=True, member_id="ana")
    assert quote["time_s"] > 15 * 60
    d = read_badge(agent, "ana")
    assert d["result"] == "job_overruns_booking" and re.search(r"free for 1[45] min", d["detail"])
    assert agent.ledger.jobs("printer-1")[0]["state"] == "held", "the job does not start"


def test_cache_too_old_and_managers_pass(badge_printer):
    agent = badge_printer()
    with agent.ledger.tx() as c:
        c.execute(
            "UPDATE directory_meta SET synced_at=?",
            ((NOW - timedelta(days=30)).isoformat().replace("+00:00", "Z"),),
        )
    d = read_badge(agent, "ana")
    assert d["result"] == "cache_too_old" and "30" in d["detail"]
    assert read_badge(agent, "max")["result"] == "allowed"


def test_held_upload_runs_only_after_its_owner_badges_in(badge_printer, tmp_path):
    agent = badge_printer()
    job = circle_gcode(tmp_path / "j.gcode", 200, 0.5, centre=(110, 110))
    job_id, _ = submit(
        agent.config, agent.ledger, "printer-1", job, "upload", member_id="ana"
    )  # held: config
    time.sleep(0.8)  # real time: a few dispatch passes (every 0.25 s) that must not start it
    assert agent.ledger.job(job_id)["state"] == "held"
    assert read_badge(agent, "dan")["action"] == "opened"  # someone else's session does not release it
    time.sleep(0.8)  # real time: the same, inside dan's session
    assert agent.ledger.job(job_id)["state"] == "held"
    read_badge(agent, "dan")  # badge out
    assert read_badge(agent, "ana")["action"] == "opened"
    assert agent.wait_idle("printer-1", 30)
    job = agent.ledger.job(job_id)
    assert (
        job["state"] == "completed" and job["session_id"] == agent.access.sessions.current("printer-1")["id"]
    )
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["member_id"] == "ana" and rec["session_id"] == job["session_id"]


class Booking(http.server.BaseHTTPRequestHandler):
    """A booking system's directory endpoint: answers with whatever `doc` holds (or fails)."""

    doc: dict | None = None
    full: dict | None = None  # answered to version=0
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        Booking.hits.append(self.path)
        if Booking.doc is None or self.headers.get("Authorization") != "Bearer tok-123":
            self.send_response(503)
            self.end_headers()
            return
        doc = Booking.full if self.path.endswith("version=0") and Booking.full else Booking.doc
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_offline_cache_then_sync_then_revocation(badge_printer):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Booking)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Booking.doc, Booking.full, Booking.hits = None, None, []
    url = f"http://127.0.0.1:{server.server_address[1]}/directory"
    try:
        agent = badge_printer(access_extra=f'sync_url = "{url}"\nsync_token = "tok-123"\nsync_every_s = 5\n')
        # the booking system is down: the cached directory decides
        assert agent.access.sync_now() is None
        assert read_badge(agent, "ana")["result"] == "allowed"
        read_badge(agent, "ana")
        # back up: a delta on the cached version revokes ana's training
        Booking.doc = {"delta": {"version": 2, "base": 1, "upsert_members": [{"id": "ana", "name": "Ana",
                       "badges": [UIDS["ana"]], "trainings": []}]}}  # fmt: skip
        assert agent.access.sync_now() == 2
        assert read_badge(agent, "ana")["result"] == "not_trained"
        # a delta against a version we do not have: the agent asks for the full snapshot
        Booking.doc, Booking.full = {"delta": {"version": 9, "base": 7}}, {"snapshot": snapshot(version=9)}
        assert agent.access.sync_now() == 9
        assert Booking.hits[-1].endswith("version=0")
        assert read_badge(agent, "ana")["result"] == "allowed"
    finally:
        server.shutdown()


def test_directory_over_mqtt_and_no_raw_badge_anywhere(tmp_path, start_sim, broker, caplog):
    """Snapshot and delta arrive over MQTT; afterwards no raw UID is in the database, logs or MQTT traffic."""
    import logging

    from tests.broker import Client, password

    caplog.set_level(logging.DEBUG)
    sim = start_sim("marlin", speed=10)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "reader": "sim"}  # fmt: skip
    bus = {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "pi-printers",
        "password": password("pi-printers"),
    }
    path = write_config(tmp_path / "agent.toml", [machine], broker=bus)
    path.write_text(path.read_text() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')
    spy = Client(broker, "fleet", client_id="spy")
    spy.subscribe("#")
    booking_sys = Client(broker, "booking")
    booking_sys.subscribe("afn/v1/fablab/+/events")
    # the booking system shares the site secret and sends keyed hashes: no raw UID on the wire either
    hashed = snapshot()
    for m in hashed["members"]:
        m["badges"] = [{"hash": badge_hash(SECRET, uid)} for uid in m["badges"]]
    booking_sys.client.publish("afn/v1/fablab/_directory/snapshot", json.dumps(hashed), qos=1, retain=True)
    agent = Agent(load_config(path)).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        deadline = time.monotonic() + 10
        while agent.access.directory.meta() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.access.directory.meta()["source"] == "mqtt"
        job = circle_gcode(tmp_path / "j.gcode", 300, 0.3, centre=(110, 110))
        submit(agent.config, agent.ledger, "printer-1", job, "upload", member_id="ana")
        assert read_badge(agent, "ana")["action"] == "opened"
        assert agent.wait_idle("printer-1", 30)
        assert read_badge(agent, "zed")["result"] == "booked_by_other"
        read_badge(agent, "ana")  # badge out
        ana = {"id": "ana", "name": "Ana", "badges": [{"hash": badge_hash(SECRET, UIDS["ana"])}]}
        delta = {"version": 2, "base": 1, "upsert_members": [ana]}
        booking_sys.client.publish("afn/v1/fablab/_directory/delta", json.dumps(delta), qos=1)
        deadline = time.monotonic() + 5
        while agent.access.directory.meta()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_badge(agent, "ana")["result"] == "not_trained", (
            "a revoked training stops new sessions at once"
        )
        deadline = time.monotonic() + 5
        while (
            not any(b'"badge"' in p for t, p, _ in booking_sys.received("events"))
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    finally:
        agent.stop()
        spy.close()
        booking_sys.close()
    raw = [uid.encode() for uid in UIDS.values()]
    db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("ledger.sqlite3*"))
    agent_traffic = [p for t, p, _ in spy.received()]
    assert len(agent_traffic) > 10 and any(b'"badge"' in p for p in agent_traffic)
    for uid in raw:
        assert uid not in db_bytes, "raw badge UID in the ledger file"
        assert uid.decode() not in caplog.text, "raw badge UID in the logs"
        assert not any(uid in p for p in agent_traffic), "raw badge UID on MQTT"
