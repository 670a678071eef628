"""What the dashboard shows per audience: actions by state, member names for managers only, events as
sentences from the catalogues (every event type the agent publishes has a sentence, not a code)."""

from __future__ import annotations

import json

import pytest

from afn_agent.actions import MACHINE_ACTIONS, offered, refusal
from afn_agent.bus.topics import Topics
from afn_agent.fleet.state import FleetState
from afn_agent.fleet.view import event_view, machine_view

IDLE = {"state": "idle", "job": None, "locked": False, "lock_pending": False, "alarms": [],
        "needs_confirmation": None}  # fmt: skip
JOB = {"id": "j", "name": "part.gcode", "state": "running", "member_id": "ana-0042", "progress": 0.5, "eta_s": 9}


@pytest.mark.parametrize(
    ("changes", "actions"),
    [
        ({}, ("lock", "estop")),
        ({"state": "printing", "job": JOB}, ("pause", "cancel", "lock", "estop")),
        ({"state": "paused", "job": JOB}, ("resume", "cancel", "lock", "estop")),
        ({"state": "waiting", "job": JOB}, ("cancel", "lock", "estop")),
        ({"state": "fault", "alarms": [{"id": 1}]}, ("clear-alarms", "lock", "estop")),
        ({"locked": True}, ("unlock", "estop")),
        ({"state": "printing", "job": JOB, "lock_pending": True}, ("pause", "cancel", "unlock", "estop")),
        ({"needs_confirmation": "bed-clear"}, ("confirm", "lock", "estop")),
        ({"state": "disconnected"}, ("lock",)),
    ],
)
def test_offered_actions_per_state_and_the_rest_refused(changes, actions):
    status = {**IDLE, **changes}
    assert offered(status) == actions
    for name in MACHINE_ACTIONS:
        assert (refusal(name, status) is None) == (name in actions)


def test_a_power_only_machine_has_no_estop():
    assert "estop" not in offered(IDLE, streamed=False)


def test_member_names_only_for_managers():
    status = {**IDLE, "state": "printing", "job": JOB, "lab": "lab-a",
              "session": {"member_id": "ana-0042", "member_name": "Ana Lopez"}}  # fmt: skip
    public = machine_view(status, False, {"ana-0042": "Ana Lopez"})
    assert "ana-0042" not in json.dumps(public) and "Ana" not in json.dumps(public)
    assert public["session"] == {"in_use": True} and public["lab"] == "lab-a"
    shown = machine_view({**status, "session": None}, True, {"ana-0042": "Ana Lopez"})
    assert shown["job"]["member_name"] == "Ana Lopez"


def test_events_are_sentences_in_both_languages():
    names = {"ana-0042": "Ana Lopez"}
    refused = {"type": "badge", "machine": "mill-1", "code": "not_trained", "member_id": "ana-0042", "t": 1}
    said = event_view(refused, names, True)["words"]
    assert said == {"en": "mill-1: Ana Lopez was refused — not trained on this machine.",
                    "fr": "mill-1 : Ana Lopez a été refusé·e — pas formé·e sur cette machine."}  # fmt: skip
    public = event_view(refused, names, False)
    assert public["words"]["en"] == "mill-1: a member was refused — not trained on this machine."
    assert "facts" not in public and "ana" not in json.dumps(public).lower()
    fault = {"type": "fault", "machine": "printer-1", "code": "thermal-runaway", "reason": "x", "t": 1}
    assert event_view(fault, {}, True)["words"]["en"].startswith("printer-1: Thermal runaway")
    assert event_view(fault, {}, True)["tone"] == "alarm"
    lock = {"type": "lock", "machine": "laser-1", "by": "max", "reason": "lens", "pending": True}
    assert event_view(lock, {}, False)["words"]["fr"] == "laser-1 : max la verrouille à la fin du travail — lens."
    command = {"type": "command", "machine": "m", "command": "pause", "actor": "max", "result": "refused",
               "code": "not_printing"}  # fmt: skip
    assert event_view(command, {}, True)["words"]["en"] == "m: max — Pause refused (not_printing)."
    odd = {"type": "x" * 100, "machine": "m"}
    assert event_view(odd, {}, True)["words"]["en"] == "m: " + "x" * 40


@pytest.mark.parametrize("kind", ["badge", "job-started", "job-completed", "job-failed", "job-held", "job-claimed",
                                  "lock", "unlock", "confirmed", "alarms-cleared", "material", "alarm",
                                  "link-lost", "door-open", "stall", "stall-cleared", "firmware-reset",
                                  "emergency-stop", "safe-state", "prompt", "session-closed", "idle-heat-off",
                                  "reader-open", "appkey_requested", "command", "reconfigured"])  # fmt: skip
def test_every_published_kind_has_its_own_sentence(kind):
    said = event_view({"type": kind, "machine": "m1", "member_id": "a"}, {}, True)["words"]
    assert said["en"] != f"m1: {kind}" and "{" not in said["en"] + said["fr"]  # not event.other


def test_temperatures_fold_from_telemetry_with_a_curve():
    state = FleetState(Topics("afn/v1", "lab"))
    state.on_message("afn/v1/lab/p1/status", json.dumps({**IDLE, "machine": "p1"}).encode())
    for t, temp in enumerate((20.0, 20.4, 25.0)):
        state._telemetry("p1", {"T0": [temp, 215.0], "B": [20, 60], "evil": "x"}, 100.0 + t * 5)
    assert state.temperatures["p1"] == {"T0": [25.0, 215.0], "B": [20.0, 60.0]}
    kinds = [k for _, k, _ in state.changes if k == "temperatures"]
    assert len(kinds) == 2  # 20.4 is not a degree away from 20.0: no change sent
    assert [p[1]["T0"] for p in state.curve("p1")] == [20.0, 20.4, 25.0]
    state._telemetry("ghost", {"T0": [1, 2]}, 1)  # a machine without a status is not tracked
    assert "ghost" not in state.temperatures


def test_time_splits_by_bucket_from_state_changes():
    from afn_agent.fleet.history import _split, bucket_of

    changes = [(50.0, "idle"), (120.0, "busy"), (150.0, "down")]
    assert _split(changes, 100.0, 200.0) == {"busy": 30.0, "heating": 0.0, "waiting": 0.0, "idle": 20.0,
                                             "down": 50.0, "unknown": 0.0}  # fmt: skip
    assert _split([], 0.0, 10.0)["unknown"] == 10.0
    heating = {"state": "printing", "job": {"state": "heating"}}
    assert bucket_of(heating) == "heating" and bucket_of({"state": "printing", "job": {}}) == "busy"
    assert bucket_of({"state": "idle", "locked": True}) == "down" and bucket_of({"state": "idle"}, False) == "down"
    assert bucket_of({"state": "waiting"}) == "waiting" and bucket_of({"state": "fault"}) == "down"


def test_a_topic_posing_as_another_labs_machine_and_oversized_picture_facts():
    state = FleetState(Topics("afn/v1", "lab"), labs=("other",))
    state.on_message("afn/v1/lab/other:printer-1/status", json.dumps({**IDLE, "machine": "x"}).encode())
    state.on_message("afn/v1/lab/_agents/a:b", json.dumps({"state": "online", "machines": []}).encode())
    assert state.machines == {} and state.agents == {}
    state.on_message("afn/v1/other/printer-1/status", json.dumps({**IDLE, "machine": "printer-1"}).encode())
    assert set(state.machines) == {"other:printer-1"} and state.locate("other:printer-1") == ("other", "printer-1")
    jpeg = "/9j/" + "A" * 100  # starts as a JPEG does (FF D8 FF)
    state.on_message("afn/v1/other/printer-1/picture",
                     json.dumps({"jpeg": jpeg, "moment": "m" * 10_000, "job_id": "j" * 500}).encode())  # fmt: skip
    _, facts = state.picture("other:printer-1") or (b"", {})
    assert len(facts["moment"]) == 80 and len(facts["job_id"]) == 80
