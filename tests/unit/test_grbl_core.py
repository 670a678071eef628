"""The GRBL core, driven by bytes alone."""

import pytest

from afn_agent.firmware import events as ev
from afn_agent.firmware.grbl import GrblProtocol
from tests.helpers import profile


def connected(name: str = "grbl-1.1", **overrides) -> GrblProtocol:
    core = GrblProtocol(profile(name, **overrides), 0.0)
    core.handshake(0.0)
    assert core.data_to_send(0.0) == b""  # nothing before the controller shows it is up
    core.receive_data(b"<Idle|MPos:0.000,0.000,0.000|FS:0,0>\n", 0.0)
    assert core.data_to_send(0.0) == b"$I\n"  # `$` commands go one at a time
    core.receive_data(b"[VER:1.1h.20190825:]\n[OPT:V,15,128]\nok\n", 0.0)
    assert core.data_to_send(0.0) == b"$$\n"
    core.receive_data(b"$0=10\n$30=1000\n$32=1\nok\n", 0.0)
    core.events()
    return core


def test_handshake_reads_build_info_and_settings():
    core = GrblProtocol(profile("grbl-1.1"), 0.0)
    core.handshake(0.0)
    core.receive_data(b"<Idle|MPos:0.000,0.000,0.000|FS:0,0>\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"[VER:1.1h.20190825:]\n[OPT:V,15,128]\nok\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"$30=1000\n$32=1\nok\n", 0.0)
    evs = core.events()
    assert ev.FirmwareInfo("Grbl 1.1h.20190825", {}) in evs
    assert core.settings == {"30": "1000", "32": "1"} and core.planner_blocks == 15


def test_character_counting_keeps_unacked_bytes_within_the_ring():
    core = connected()
    lines = [f"G1 X{i}.000 Y{i}.500 F1000" for i in range(20)]
    for i, line in enumerate(lines):
        core.send(line, i)
    out = core.data_to_send(0.0)
    assert len(out) <= 127 and len(out) + len(lines[0]) + 1 > 127
    assert core.data_to_send(0.0) == b""
    core.receive_data(b"ok\n", 0.0)
    assert [e.tag for e in core.events() if isinstance(e, ev.LineAcked)] == [0]
    first_unsent = out.count(b"\n")
    assert core.data_to_send(0.0).startswith(f"G1 X{first_unsent}.000".encode())


def test_opt_report_can_only_shrink_the_window():
    core = GrblProtocol(profile("grblhal"), 0.0)  # the profile says 1024
    core.receive_data(b"[OPT:VNMHS,35,256,3,0]\n", 0.0)
    assert core.window.limit == 255
    core = GrblProtocol(profile("grblhal"), 0.0)
    core.receive_data(b"[OPT:VNMHS,35,4096,3,0]\n", 0.0)
    assert core.window.limit == 1023


def test_realtime_bytes_bypass_the_window():
    core = connected()
    for i in range(20):
        core.send(f"G1 X{i}.000 Y{i}.500 F1000")
    core.data_to_send(0.0)
    before = core.window.bytes
    assert core.realtime("hold") == b"!"
    assert core.realtime("resume") == b"~"
    assert core.realtime("status") == b"?"
    assert core.realtime("jog_cancel") == b"\x85"
    assert core.window.bytes == before


def test_status_report_parsed():
    core = connected()
    core.receive_data(b"<Hold:0|MPos:1.000,-2.500,3.000|Bf:15,128|FS:500,8000|Ov:100,100,100|Pn:D>\n", 0.0)
    evs = core.events()
    status = next(e for e in evs if isinstance(e, ev.MachineStatus))
    assert (status.state, status.substate, status.planner_free, status.rx_free) == ("Hold", 0, 15, 128)
    assert status.fields["FS"] == "500,8000" and status.fields["Pn"] == "D"
    assert ev.Position({"X": 1.0, "Y": -2.5, "Z": 3.0}) in evs


@pytest.mark.parametrize("state", ["Idle", "Run", "Jog", "Alarm", "Door:3", "Check", "Home", "Sleep", "Tool"])
def test_every_state_is_recognised(state):
    core = connected()
    core.receive_data(f"<{state}|WPos:0.000,0.000,0.000>\n".encode(), 0.0)
    status = next(e for e in core.events() if isinstance(e, ev.MachineStatus))
    assert status.state == state.split(":")[0]


def test_error_retires_the_line_and_says_what_it_means():
    core = connected()
    core.send("G1 X10", "tag-1")
    core.data_to_send(0.0)
    core.receive_data(b"error:22\n", 0.0)
    warning = next(e for e in core.events() if isinstance(e, ev.FirmwareWarning))
    assert "feed rate not set" in warning.text and "G1 X10" in warning.text and warning.tag == "tag-1"
    assert not core.window.lines


def test_alarm_during_a_job_faults_with_its_meaning():
    core = connected()
    core.begin_job()
    core.receive_data(b"ALARM:1\n", 0.0)
    evs = core.events()
    assert ev.Alarm(1, "hard limit switch triggered; position is lost, re-home") in evs
    assert [e.code for e in evs if isinstance(e, ev.Fault)] == ["alarm-1"]


def test_alarm_outside_a_job_locks_until_unlocked():
    core = connected()
    core.receive_data(b"ALARM:3\nGrbl 1.1h ['$' for help]\n[MSG:'$H'|'$X' to unlock]\n", 0.0)
    evs = core.events()
    assert not any(isinstance(e, ev.Fault) for e in evs) and core.alarm_locked
    core.unlock()
    assert core.data_to_send(1.0) == b"$I\n"  # the banner's greeting first, one `$` line at a time
    core.receive_data(b"[VER:1.1h.20190825:]\n[OPT:V,15,128]\nok\n", 0.0)
    assert core.data_to_send(1.0) == b"$$\n"
    core.receive_data(b"$0=10\nok\n", 0.0)
    assert core.data_to_send(1.0) == b"$X\n"
    core.receive_data(b"[MSG:Caution: Unlocked]\nok\n", 0.0)
    assert not core.alarm_locked


def test_banner_mid_job_is_a_fault_but_our_own_reset_is_not():
    core = connected()
    core.begin_job()
    core.send("G1 X1 F100")
    core.data_to_send(0.0)
    core.receive_data(b"\r\nGrbl 1.1h ['$' for help]\r\n", 0.0)
    assert [e.code for e in core.events() if isinstance(e, ev.Fault)] == ["firmware-reset"]

    core = connected()
    core.begin_job()
    core.send("G1 X1 F100")
    core.data_to_send(0.0)
    assert core.soft_reset() == b"\x18"
    core.receive_data(b"ALARM:3\r\nGrbl 1.1h ['$' for help]\r\n", 0.0)
    evs = core.events()
    assert [e.mid_job for e in evs if isinstance(e, ev.FirmwareReset)] == [False]
    assert not any(isinstance(e, ev.Fault) for e in evs)


@pytest.mark.parametrize(
    "banner", [b"GrblHAL 1.1f ['$' or '$HELP' for help]", b"Grbl 3.7 [FluidNC v3.7.8 '$' for help]"]
)
def test_other_banners_are_resets_too(banner):
    core = connected()
    core.receive_data(banner + b"\n", 0.0)
    assert any(isinstance(e, ev.FirmwareReset) for e in core.events())


def test_settings_writes_go_one_at_a_time():
    core = connected()
    core.send("G1 X1 F100")
    core.send("$110=500")
    core.send("G1 X2")
    assert core.data_to_send(0.0) == b"G1 X1 F100\n"  # the write waits for an empty window
    core.receive_data(b"ok\n", 0.0)
    assert core.data_to_send(0.0) == b"$110=500\n"  # and nothing follows it until its ok
    assert core.data_to_send(0.0) == b""
    core.receive_data(b"ok\n", 0.0)
    assert core.data_to_send(0.0) == b"G1 X2\n"


def test_check_mode_is_tracked_and_its_reset_is_expected():
    core = connected()
    core.begin_job()
    core.receive_data(b"[MSG:Enabled]\nok\n", 0.0)
    assert core.check_mode
    core.receive_data(b"[MSG:Disabled]\nok\nGrbl 1.1h ['$' for help]\n", 0.0)
    assert not core.check_mode
    assert not any(isinstance(e, ev.Fault) for e in core.events())


def test_status_polls_at_most_five_a_second():
    core = connected(status_poll_s=0.05)
    polls = 0
    for i in range(101):
        core.tick(i * 0.01)
        polls += core.urgent_data().count(b"?")
    assert 4 <= polls <= 6


def test_idle_controller_with_lines_outstanding_means_lost_oks():
    core = connected(ok_s=1.0)
    core.send("G1 X1 F100")
    core.send("G1 X2")
    core.data_to_send(now=0.0)
    core.receive_data(b"ok\n", now=0.1)
    core.receive_data(b"<Idle|MPos:2.000,0.000,0.000|Bf:15,127>\n", now=1.5)
    core.tick(1.6)
    evs = core.events()
    assert [e.text for e in evs if isinstance(e, ev.LineAcked)] == ["G1 X1 F100", "G1 X2"]
    assert not any(isinstance(e, ev.Fault) for e in evs)


def test_silent_controller_faults():
    core = connected(ok_s=1.0)
    core.send("G1 X1 F100")
    core.data_to_send(now=0.0)
    core.tick(1.5)
    assert [e.code for e in core.events() if isinstance(e, ev.Fault)] == ["no-answer"]


def test_running_controller_is_alive_without_oks():
    core = connected(ok_s=1.0)
    core.send("G1 X100 F10")
    core.data_to_send(now=0.0)
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):
        core.receive_data(b"<Run|MPos:1.000,0.000,0.000|Bf:14,127>\n", now=t)
        core.tick(t + 0.01)
    assert not any(isinstance(e, ev.Fault) for e in core.events())


def test_messages_and_parser_state():
    core = connected()
    core.receive_data(b"[MSG:'$H'|'$X' to unlock]\n[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]\n", 0.0)
    msgs = [e.text for e in core.events() if isinstance(e, ev.Message)]
    assert msgs == ["'$H'|'$X' to unlock", "GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"]
