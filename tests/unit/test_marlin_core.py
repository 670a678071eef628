"""The Marlin core, driven by bytes alone: no port, no thread, no clock but the one we pass."""

from functools import reduce

import pytest

from afn_agent.firmware import events as ev
from afn_agent.firmware.framing import checksum, frame
from afn_agent.firmware.marlin import MarlinProtocol
from tests.helpers import framed, profile


def connected(**overrides) -> MarlinProtocol:
    """A core past its handshake (M110, M115 answered), window empty."""
    core = MarlinProtocol(profile(**overrides), 0.0)
    core.handshake(0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok\n", 0.0)  # M110 goes alone
    core.data_to_send(0.0)
    core.receive_data(b"FIRMWARE_NAME:Marlin 2.1.2 SOURCE_CODE_URL:x\nCap:EMERGENCY_PARSER:1\nok\n", 0.0)
    core.events()
    assert not core.window.lines
    return core


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_frame_is_line_number_command_and_xor_checksum():
    payload = b"N7 G1 X10 Y20"
    assert checksum(payload) == reduce(lambda a, b: a ^ b, payload)
    assert frame(7, "G1 X10 Y20") == payload + b"*" + str(checksum(payload)).encode() + b"\n"


def test_handshake_resets_numbering_and_asks_capabilities():
    core = MarlinProtocol(profile(), 0.0)
    core.handshake(0.0)
    assert framed(core.data_to_send(0.0)) == [(0, "M110 N0")]  # alone: Marlin renumbers when it runs it
    core.receive_data(b"ok\n", 0.0)
    assert framed(core.data_to_send(0.0)) == [(1, "M115")]
    core.receive_data(
        b"FIRMWARE_NAME:Marlin 2.1.2 (x) SOURCE_CODE_URL:github.com\n"
        b"Cap:AUTOREPORT_TEMP:1\nCap:EMERGENCY_PARSER:1\nCap:ADVANCED_OK:0\nok\n", 0.0
    )
    info = [e for e in core.events() if isinstance(e, ev.FirmwareInfo)]
    assert info == [
        ev.FirmwareInfo(
            "Marlin 2.1.2 (x)", {"AUTOREPORT_TEMP": True, "EMERGENCY_PARSER": True, "ADVANCED_OK": False}
        )
    ]
    assert core.has_emergency_parser


def test_window_never_holds_more_bytes_than_the_rx_ring():
    core = connected()
    for i in range(50):
        core.send(f"G1 X{i}.123 Y{i}.456 E0.0123", i)
    first = core.data_to_send(0.0)
    assert len(first) <= 127 < len(first) + len(frame(99, "G1 X9.123 Y9.456 E0.0123"))
    assert core.data_to_send(0.0) == b""  # full: nothing more until an ok
    core.receive_data(b"ok\n", 0.0)
    acked = [e for e in core.events() if isinstance(e, ev.LineAcked)]
    assert [a.tag for a in acked] == [0]
    more = core.data_to_send(0.0)
    assert framed(more)[0][0] == framed(first)[-1][0] + 1
    assert core.window.bytes <= 127


def test_pingpong_sends_one_line_per_ok():
    core = connected(flow="pingpong")
    for i in range(3):
        core.send(f"G1 X{i}")
    assert len(framed(core.data_to_send(0.0))) == 1
    assert core.data_to_send(0.0) == b""
    core.receive_data(b"ok\n", 0.0)
    assert len(framed(core.data_to_send(0.0))) == 1


def test_resend_rewinds_to_the_requested_line_and_eats_its_ok():
    core = connected()
    for i in range(4):
        core.send(f"G1 X{i}")
    sent = framed(core.data_to_send(0.0))
    assert [n for n, _ in sent] == [2, 3, 4, 5]
    core.receive_data(b"ok\nError:checksum mismatch, Last Line: 2\nResend: 3\nok\n", 0.0)
    evs = core.events()
    assert [e.seq for e in evs if isinstance(e, ev.LineAcked)] == [2]
    assert ev.ResendRequested(3) in evs
    assert core.outstanding == 0  # line 2 answered; 3..5 to be sent again
    again = framed(core.data_to_send(0.0))
    assert again == [(3, "G1 X1")]  # alone until answered: the ring may hold bytes sent after the flush
    core.receive_data(b"ok\n", 0.0)
    assert framed(core.data_to_send(0.0)) == [(4, "G1 X2"), (5, "G1 X3")]
    assert core.resends == 1


def test_echoed_resends_from_lines_in_flight_are_ignored_until_the_copy_is_out():
    core = connected()
    for i in range(4):
        core.send(f"G1 X{i}")
    core.data_to_send(1.0)  # lines 2..5
    # lines 3, 4, 5 reached the firmware after it flushed: each is refused with the same request
    core.receive_data(b"Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n", 1.0)
    core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n" * 3, 1.0)
    evs = core.events()
    assert [e.stale for e in evs if isinstance(e, ev.ResendRequested)] == [False, True, True, True]
    assert [n for n, _ in framed(core.data_to_send(1.0))] == [2]  # one copy, alone
    core.receive_data(b"ok\n", 1.01)
    assert [n for n, _ in framed(core.data_to_send(1.01))] == [3, 4, 5]
    core.receive_data(b"ok\n" * 3, 1.02)
    assert [e.seq for e in core.events() if isinstance(e, ev.LineAcked)] == [2, 3, 4, 5]
    core.tick(2.0)
    assert core.data_to_send(2.0) == b""  # nothing sent twice


def test_resend_without_trailing_ok_keeps_the_next_ok():
    core = connected(ok_after_resend=False)
    core.send("G1 X1")
    core.send("G1 X2")
    core.data_to_send(0.0)
    core.receive_data(b"Resend: 2\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok\n", 0.0)
    assert [e.seq for e in core.events() if isinstance(e, ev.LineAcked)] == [2, 3]


def test_rs_short_form_is_a_resend():
    core = connected()
    core.send("G1 X1")
    core.data_to_send(0.0)
    core.receive_data(b"rs N2\n", 0.0)
    assert framed(core.data_to_send(0.0)) == [(2, "G1 X1")]


def test_resend_of_a_line_no_longer_held_faults():
    core = connected()
    for i in range(600):
        core.send(f"G1 X{i}")
        core.data_to_send(0.0)
        core.receive_data(b"ok\n", 0.0)
    core.events()
    core.receive_data(b"Resend: 5\nok\n", 0.0)
    faults = [e for e in core.events() if isinstance(e, ev.Fault)]
    assert faults and faults[0].code == "resend-unavailable" and "line 5" in faults[0].reason


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"Error:Printer halted. kill() called!\n", "killed"),
        (b"Error:Thermal Runaway, system stopped! Heater_ID: 0\n", "thermal-runaway"),
        (b"Error:MAXTEMP triggered, system stopped! Heater_ID: bed\n", "maxtemp"),
        (b"Error:MINTEMP triggered, system stopped! Heater_ID: 0\n", "mintemp"),
        (b"Error:Heating failed, system stopped! Heater_ID: 0\n", "heating-failed"),
        (b"Error: fatal: stepper driver overheated\n", "firmware-fault"),
        (b"!! MCU shutdown\n", "firmware-fault"),
    ],
)
def test_fatal_errors_fault_the_job(line, code):
    core = connected()
    core.receive_data(line, 0.0)
    faults = [e for e in core.events() if isinstance(e, ev.Fault)]
    assert [f.code for f in faults] == [code]
    core.send("G1 X1")
    assert core.data_to_send(0.0) == b""  # nothing more goes out after a fault


def test_unknown_command_is_a_warning_and_its_ok_counts():
    core = connected()
    core.send("M9999")
    core.data_to_send(0.0)
    core.receive_data(b'echo:Unknown command: "M9999"\nok\n', 0.0)
    evs = core.events()
    assert kinds(evs) == ["FirmwareWarning", "LineAcked"]


def test_busy_keepalive_holds_off_the_watchdog():
    core = connected(ok_s=5.0)
    core.send("G28")
    core.data_to_send(now=0.0)
    core.tick(4.0)
    core.receive_data(b"echo:busy: processing\n", now=4.0)
    core.tick(8.0)
    evs = core.events()
    assert ev.Busy("processing") in evs and not any(isinstance(e, ev.ProbeSent) for e in evs)


def test_watchdog_probes_with_numbered_m105_then_faults():
    core = connected(ok_s=2.0, probes=2)
    core.send("G1 X1")
    core.data_to_send(now=0.0)
    core.tick(1.9)
    assert core.data_to_send(0.0) == b""
    core.tick(2.1)
    assert framed(core.data_to_send(0.0)) == [(3, "M105")]
    core.tick(4.2)
    assert framed(core.data_to_send(0.0)) == [(4, "M105")]
    core.tick(6.3)
    evs = core.events()
    assert kinds(evs).count("ProbeSent") == 2
    assert [e.code for e in evs if isinstance(e, ev.Fault)] == ["no-answer"]


def test_long_commands_are_exempt_from_the_ok_watchdog():
    core = connected(ok_s=2.0, long_command_s=600.0)
    core.send("M109 S210")
    core.data_to_send(now=0.0)
    core.tick(60.0)
    assert not any(isinstance(e, ev.ProbeSent) for e in core.events())


def test_a_silent_long_command_gets_one_m105_behind_it_and_a_lost_one_is_resent():
    """No keepalive known: after ok_s one M105 goes behind the long command (pingpong too), once. Marlin
    answers it when the command ends, or, having dropped the command as a copy of the line before,
    asks for it again."""
    core = connected(ok_s=2.0, long_command_s=600.0, flow="pingpong")
    core.send("M400")
    assert framed(core.data_to_send(0.0)) == [(2, "M400")]
    core.tick(2.1)
    assert framed(core.data_to_send(2.1)) == [(3, "M105")]
    core.tick(30.0)
    assert core.data_to_send(30.0) == b"" and not core.events()  # once, and no probe: it may still run
    core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", 30.1)
    assert framed(core.data_to_send(30.1)) == [(2, "M400")]


def test_a_long_command_heard_busy_is_given_ok_s_from_its_last_keepalive():
    """Real Marlin 2.1 says `busy: processing` every 2 s while a command runs: once heard for the line,
    silence of ok_s means its ok was lost (or the firmware stopped), found in ok_s, not long_command_s."""
    core = connected(ok_s=2.0, long_command_s=600.0)
    core.send("M400")
    core.data_to_send(0.0)
    for t in (1.9, 3.8, 5.7):  # keepalives while it runs: no probe
        core.receive_data(b"echo:busy: processing\n", t)
        core.tick(t + 1.5)
    assert not any(isinstance(e, ev.ProbeSent) for e in core.events())
    core.tick(7.8)  # 2.1 s without a word
    assert ev.ProbeSent(1) in core.events()
    assert framed(core.data_to_send(7.8)) == [(3, "M105")]


def test_a_long_command_never_heard_busy_keeps_long_command_s_though_others_were():
    """Keepalives are learnt per line: a build without BUSY_WHILE_HEATING says `busy:` while homing but
    nothing while M109 heats, bar its temperature lines. Probed at ok_s, the heat-up would fault."""
    core = connected(ok_s=2.0, long_command_s=600.0, probes=2)
    core.send("G28")
    core.data_to_send(0.0)
    core.receive_data(b"echo:busy: processing\nok\n", 1.0)
    core.send("M109 S210")
    assert framed(core.data_to_send(1.0)) == [(3, "M109 S210")]
    for second in range(2, 120):
        core.receive_data(b"T:%d.0 /210.0 B:60.0 /60.0 @:127 B@:0 W:?\n" % (20 + second), float(second))
        core.tick(second + 0.5)
    assert framed(core.data_to_send(120.0)) == [(4, "M105")]  # the one M105 behind it, sent at 3.5 s
    evs = core.events()
    assert not any(isinstance(e, (ev.ProbeSent, ev.Fault)) for e in evs)
    core.receive_data(b"ok\nok T:210.0 /210.0 B:60.0 /60.0 @:64 B@:0\n", 121.0)
    assert [e.seq for e in core.events() if isinstance(e, ev.LineAcked)] == [3, 4]


def test_keepalives_spaced_wider_than_ok_s_leave_a_long_command_its_long_wait():
    """After `M113 S10` Marlin says `busy:` every 10 s: a command heard so is still running between two,
    and probing it at ok_s would queue an M105 behind it every keepalive (the probes' count starts again
    at each `busy:`)."""
    core = connected(ok_s=5.0, long_command_s=600.0)
    core.send("M109 S210")
    assert framed(core.data_to_send(0.0)) == [(2, "M109 S210")]
    for t in range(10, 120, 10):
        core.receive_data(b"echo:busy: processing\n", float(t))
        core.tick(t + 6.0)
    assert framed(core.data_to_send(120.0)) == [(3, "M105")]  # the one M105 behind it, at 5 s
    assert not any(isinstance(e, (ev.ProbeSent, ev.Fault)) for e in core.events())


def test_after_a_probe_its_answer_counts_though_an_older_m105_lost_its_own():
    """Seen against real Marlin: a probe's M105 was run but its `ok T:` never came. The next probe's
    answer must answer that probe; taken for the older M105 it left each later probe one answer behind,
    and the job probed every ok_s for ever."""
    core = connected(ok_s=5.0)
    core.send("G1 X1")
    core.data_to_send(0.0)  # N2, its ok lost
    core.tick(5.1)
    assert framed(core.data_to_send(5.1)) == [(3, "M105")]  # run, its answer lost too
    core.tick(10.2)
    assert framed(core.data_to_send(10.2)) == [(4, "M105")]
    core.receive_data(b"ok T:19.4 /0.0 B:19.4 /0.0 @:0 B@:0\n", 10.3)
    assert not core.outstanding
    core.send("G1 X2")
    assert framed(core.data_to_send(10.3)) == [(5, "G1 X2")]
    core.receive_data(b"ok\n", 10.4)
    acked = [e.seq for e in core.events() if isinstance(e, ev.LineAcked)]
    assert acked == [2, 3, 4, 5]


def test_an_m105_resent_after_a_probe_answers_for_itself_again():
    """The probe's rule must not outlive a Resend: from the line asked for on, every line goes out again
    after the probe and is answered in order, an older M105 too. Its `ok T:` taken for the probe would
    retire lines still in the firmware's ring and leave the window counting oks one line ahead."""
    core = connected(ok_s=5.0)
    for text in ("G1 X0", "M105", "G1 X1"):
        core.send(text)
    assert [n for n, _ in framed(core.data_to_send(0.0))] == [2, 3, 4]
    core.tick(5.1)
    assert framed(core.data_to_send(5.1)) == [(5, "M105")]
    core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", 5.2)
    assert framed(core.data_to_send(5.2)) == [(2, "G1 X0")]  # the resent line goes alone
    core.receive_data(b"ok\n", 5.3)
    assert [n for n, _ in framed(core.data_to_send(5.3))] == [3, 4, 5]
    core.receive_data(b"ok T:19.4 /0.0 B:19.4 /0.0 @:0 B@:0\n", 5.4)  # the resent N3 M105's answer
    assert [e.seq for e in core.events() if isinstance(e, ev.LineAcked)] == [2, 3]
    core.receive_data(b"ok\nok T:19.4 /0.0 B:19.4 /0.0 @:0 B@:0\n", 5.5)
    assert [e.seq for e in core.events() if isinstance(e, ev.LineAcked)] == [4, 5]
    assert not core.outstanding


def test_m105_answer_is_a_barrier_that_resyncs_lost_oks():
    core = connected()
    for i in range(3):
        core.send(f"G1 X{i}")
    core.send("M105")
    core.data_to_send(0.0)
    # the oks of the three moves were lost; the answer to M105 proves they were processed
    core.receive_data(b"ok T:200.0 /200.0 B:60.0 /60.0 @:64 B@:0\n", 0.0)
    evs = core.events()
    assert [e.text for e in evs if isinstance(e, ev.LineAcked)] == ["G1 X0", "G1 X1", "G1 X2", "M105"]
    assert ev.Temperatures({"T": (200.0, 200.0), "B": (60.0, 60.0)}) in evs
    assert not core.window.lines


def test_advanced_ok_retires_lines_whose_ok_was_lost():
    core = connected(queue_depth=4)
    for i in range(5):
        core.send(f"G1 X{i}")
    core.data_to_send(0.0)  # lines 2..6
    # ADVANCED_OK names the line it answers (real Marlin 2.1.2): 6 is done, so are 2..5 whose oks were lost
    core.receive_data(b"ok N6 P10 B2\n", 0.0)
    acked = [e.seq for e in core.events() if isinstance(e, ev.LineAcked)]
    assert acked == [2, 3, 4, 5, 6]
    assert core.outstanding == 0 and core.window.bytes == 0
    assert core.planner_free == 10 and core.queue_free == 2


@pytest.mark.parametrize(
    ("line", "heaters"),
    [
        (b"ok T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0\n", {"T": (210.0, 210.0), "B": (60.0, 60.0)}),
        (
            b" T:25.00 /0.00 B:24.00 /0.00 C:30.0 /0.0 @:0 B@:0\n",
            {"T": (25.0, 0.0), "B": (24.0, 0.0), "C": (30.0, 0.0)},
        ),
        (
            b"T0:200.0 /200.0 T1:25.0 /0.0 B:60.0 /60.0\n",
            {"T0": (200.0, 200.0), "T1": (25.0, 0.0), "B": (60.0, 60.0)},
        ),
        (b" T:150.2 E:0 W:?\n", {"T": (150.2, 0.0)}),
    ],
)
def test_temperature_reports(line, heaters):
    core = connected()
    if line.startswith(b"ok"):
        core.send("M105")
        core.data_to_send(0.0)
    core.receive_data(line, 0.0)
    temps = [e for e in core.events() if isinstance(e, ev.Temperatures)]
    assert temps == [ev.Temperatures(heaters)]


def test_m114_position_stops_before_the_step_counts():
    core = connected()
    core.receive_data(b"X:10.00 Y:20.50 Z:0.30 E:1.25 Count X:800 Y:1640 Z:120\n", 0.0)
    assert ev.Position({"X": 10.0, "Y": 20.5, "Z": 0.3, "E": 1.25}) in core.events()


def test_action_commands():
    core = connected()
    core.receive_data(b"//action:pause\n//action:notification Filament runout\n", 0.0)
    assert core.events() == [
        ev.ActionCommand("pause", ""),
        ev.ActionCommand("notification", "Filament runout"),
    ]


def test_start_banner_mid_job_is_a_reset_fault():
    core = connected()
    core.begin_job()
    core.send("G1 X1")
    core.data_to_send(0.0)
    core.receive_data(b"start\necho:Marlin 2.1.2\n", 0.0)
    evs = core.events()
    assert ev.FirmwareReset("start", True) in evs
    assert [e.code for e in evs if isinstance(e, ev.Fault)] == ["firmware-reset"]


def test_start_banner_while_idle_just_redoes_the_handshake():
    core = connected()
    core.receive_data(b"start\n", 1.0)
    evs = core.events()
    assert ev.FirmwareReset("start", False) in evs and not any(isinstance(e, ev.Fault) for e in evs)
    assert core.data_to_send(1.0) == b""  # answers to lines written before the reboot may still come
    core.receive_data(b"ok\n", 1.1)  # ... and answer none of ours
    assert framed(core.data_to_send(1.3)) == [(0, "M110 N0")]
    core.receive_data(b"ok\n", 1.4)
    assert framed(core.data_to_send(1.4)) == [(1, "M115")]


def test_wait_with_lines_outstanding_probes_at_once():
    core = connected()
    core.send("G1 X1")
    core.data_to_send(0.0)
    core.receive_data(b"wait\n", 0.0)
    assert framed(core.data_to_send(0.0))[0][1] == "M105"


def test_flush_fragment_executed_as_unknown_command_does_not_ack_a_line():
    core = connected()
    for i in range(3):
        core.send(f"G1 X{i}")
    core.data_to_send(0.0)
    core.receive_data(b"Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b'echo:Unknown command: "7"\nok\n', 0.0)
    assert not any(isinstance(e, ev.LineAcked) for e in core.events())
    assert core.outstanding == 1  # the resent line, alone


def test_emergency_stop_drops_the_job_and_is_raw_m112():
    core = connected()
    for i in range(10):
        core.send(f"G1 X{i}")
    assert core.emergency_stop() == b"M112\n"
    assert core.data_to_send(0.0) == b""


def test_garbage_and_partial_lines_do_not_break_the_core():
    core = connected()
    core.receive_data(b"\xff\xfe garbage \x00\nok", 0.0)
    core.receive_data(b"\n", 0.0)
    assert isinstance(core.events(), list)


def test_without_emergency_parser_the_window_keeps_room_for_m112():
    core = MarlinProtocol(profile("prusa-mk3"), 0.0)
    assert core.window.limit == 127 - len(b"M112\n")
    core.handshake(0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"FIRMWARE_NAME:Marlin\nCap:EMERGENCY_PARSER:1\nok\n", 0.0)
    assert core.window.limit == 127  # the parser acts on arrival, even on bytes the ring drops


def test_a_wait_for_a_person_is_reported_once_with_the_firmwares_own_words():
    core = connected()
    core.send("M0 Remove the part", "m0")
    core.data_to_send(0.0)
    core.receive_data(b"//action:prompt_end\n//action:prompt_begin Remove the part\n"
                      b"//action:prompt_button Continue\n//action:prompt_show\n", 0.1)  # fmt: skip
    core.receive_data(b"echo:busy: paused for user\necho:busy: paused for user\n", 2.0)
    events = core.events()
    (prompt,) = [e for e in events if isinstance(e, ev.HostPrompt)]
    assert prompt == ev.HostPrompt("Remove the part", ("Continue",))
    (wait,) = [e for e in events if isinstance(e, ev.UserWait)]  # the keepalive repeats: one wait
    assert (wait.text, wait.tag) == ("M0 Remove the part", "m0")
    assert core.continue_bytes() == b"M108\n"
    core.receive_data(b"echo:busy: processing\n", 3.0)
    assert not [e for e in core.events() if isinstance(e, ev.UserWait)]


def test_without_an_emergency_parser_a_wait_cannot_be_ended_from_the_host():
    core = MarlinProtocol(profile(), 0.0)
    assert core.continue_bytes() == b""


def test_the_plain_ok_shortcut_acts_as_the_general_reading_does():
    """`ok N<n> P<p> B<b>` is taken without decoding and trying every pattern (the streaming hot path):
    the same events and state as the general reading, around resends, a fragment's ok, an ok eaten after
    a resend, temperatures, a reset's quiet spell and a damaged line."""
    script = [
        b"ok N1 P15 B3\nok N2 P14 B2\n",
        b"Error:checksum mismatch, Last Line: 2\nResend: 3\nok\n",  # Marlin 2's ok after a resend: eaten
        b"ok N3 P15 B3\n",
        b'echo:Unknown command: "X1"\nok N4 P15 B3\n',  # a fragment ran, then our line 4: a damaged line
        b"ok N5 P15 B3 T:20.0 /0.0\n",  # not the plain shape: the general reading
        b"ok N6 P15 B3\r\n",
        b"Resend: 7\nok N7 P15 B3\n",
        b"ok N99 P15 B3\n",  # a number never used: a line from before our M110
        b"ok N8 P15 B3\nstart\nok N1 P15 B3\n",  # a reset: the answer after it is to none of ours
    ]
    cores = [connected(), connected()]
    cores[1]._plain_ok = lambda raw, now: False  # type: ignore[method-assign]
    tried: list[tuple[bytes, bool]] = []
    shortcut = cores[0]._plain_ok

    def watched(raw: bytes, now: float) -> bool:
        tried.append((raw, taken := shortcut(raw, now)))
        return taken

    cores[0]._plain_ok = watched  # type: ignore[method-assign]
    seen: list[list] = [[], []]
    for i, core in enumerate(cores):
        core.begin_job()
        for n in range(12):
            core.send(f"G1 X{n}.5 Y{n}.25 E0.1", n)
        for step, data in enumerate(script):
            t = 1.0 + step * 0.05
            seen[i].append((core.data_to_send(t), core.events()))
            core.receive_data(data, t)
            core.tick(t)
            seen[i].append((core.window.bytes, core.outstanding, core.planner_free, core.queue_free,
                            core.lines_heard, core.resends, core.errors, core.events()))  # fmt: skip
    assert seen[0] == seen[1]
    acked = [e.seq for *_, events in seen[0][1::2] for e in events if isinstance(e, ev.LineAcked)]
    assert acked == [2, 3, 4, 5, 6, 7]
    assert [raw for raw, taken in tried if not taken] == [  # left to the general reading
        b"ok N4 P15 B3", b"ok N5 P15 B3 T:20.0 /0.0", b"ok N7 P15 B3", b"ok N1 P15 B3"]  # fmt: skip


@pytest.mark.parametrize("damaged", ["41", "G1", " 1", "M1", ".1"])
def test_the_only_line_read_without_its_n_is_asked_for_at_once(damaged):
    """Pingpong: line N1's `N` was damaged on the wire, so Marlin read an unknown command (ran nothing)
    and answered an ok without N. No later line will make it ask for N1: the core probes at once (the
    probe's Resend brings the line back) instead of waiting out ok_s."""
    core = connected(flow="pingpong")
    core.send("G1 X-3.586 Y-23.602 E0.00333")
    core.send("G1 X-3.487 Y-23.617 E0.00333")
    (sent,) = framed(core.data_to_send(0.0))
    assert sent == (2, "G1 X-3.586 Y-23.602 E0.00333")
    core.receive_data(f'echo:Unknown command: "{damaged}2 G1 X-3.586 Y-23.602 E0.00333"\nok P15 B3\n'.encode(),
                      0.01)  # fmt: skip
    assert not any(isinstance(e, ev.LineAcked) for e in core.events())
    assert framed(core.data_to_send(0.01)) == [(3, "M105")]  # the probe, 0.01 s after: not ok_s later
    core.receive_data(b'echo:Unknown command: "O3 M105"\nok P15 B3\n', 0.02)  # the probe's N damaged too
    assert framed(core.data_to_send(0.02)) == [(4, "M105")]
    core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", 0.03)
    assert framed(core.data_to_send(0.03)) == [(2, "G1 X-3.586 Y-23.602 E0.00333")]
    core.receive_data(b"ok\n", 0.04)
    assert [e.tag for e in core.events() if isinstance(e, ev.LineAcked)] == [None]


def test_an_unknown_fragment_that_is_not_our_only_line_waits_as_before():
    """A fragment with more of our lines on the way (windowed), or one that is not our line: no probe;
    the lines behind it make Marlin ask for the lost one."""
    core = connected()
    for i in range(3):
        core.send(f"G1 X{i}.5")
    core.data_to_send(0.0)
    core.receive_data(b'echo:Unknown command: "42 G1 X0.5"\nok P15 B3\n', 0.01)
    assert core.data_to_send(0.01) == b""
    solo = connected(flow="pingpong")
    solo.send("G1 X1.5")
    solo.data_to_send(0.0)
    solo.receive_data(b'echo:Unknown command: "G1 X9"\nok P15 B3\n', 0.01)
    assert solo.data_to_send(0.01) == b""
