"""The eight protocol bugs real firmware exposed, each replayed on the cores from the bytes the real
GRBL 1.1h and Marlin 2.1.2 (`../shared/realfw/`) wrote when they were recorded. Every test here fails on
the cores as they were before the fix."""

from __future__ import annotations

from afn_agent.firmware import events as ev
from afn_agent.firmware.grbl import GrblProtocol
from afn_agent.firmware.marlin import MarlinProtocol
from afn_agent.machine.job import JobPos
from tests.helpers import framed, profile

# ---- Marlin 2.1.2 ------------------------------------------------------------------------------
M115_TAIL = (
    b"FIRMWARE_NAME:Marlin 2.1.2 (Nov 29 2026 22:07:58) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin \
PROTOCOL_VERSION:1.0 MACHINE_TYPE:realfw linux EXTRUDER_COUNT:1\nCap:AUTOREPORT_TEMP:1\nCap:EMERGENCY_PARSER:1\n\
Cap:HOST_ACTION_COMMANDS:1\nok N1 P15 B3\n"
)


def connected_marlin() -> MarlinProtocol:
    core = MarlinProtocol(profile("marlin2"), 0.0)
    core.handshake(0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok N0 P15 B3\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(M115_TAIL, 0.0)
    core.events()
    return core


def acked(core: MarlinProtocol) -> list[int]:
    return [e.seq for e in core.events() if isinstance(e, ev.LineAcked)]


def test_bug5_m110_goes_alone_and_m115_only_after_its_ok():
    """Marlin renumbers when M110 runs, not when it is read: N1 read behind it was refused (Resend: 1)."""
    core = MarlinProtocol(profile("marlin2"), 0.0)
    core.handshake(0.0)
    assert framed(core.data_to_send(0.0)) == [(0, "M110 N0")]
    assert core.data_to_send(0.0) == b""
    core.receive_data(b"ok N0 P15 B3\n", 0.0)
    assert framed(core.data_to_send(0.0)) == [(1, "M115")]
    core.receive_data(M115_TAIL, 0.0)
    assert [e for e in core.events() if isinstance(e, ev.FirmwareInfo)]


def test_bug6_resend_after_a_resend_is_honoured_not_taken_for_an_echo():
    """Recorded: the resent N20 arrived damaged too. Marlin asks once and flushed the rest; the old core
    counted N21 as a future echo, ignored the request, and stalled until its probe 5 s later."""
    core = connected_marlin()
    for i in (19, 20, 21):
        core.send(f"G1 X{i} E0.00333", JobPos(i, i))
    assert [n for n, _ in framed(core.data_to_send(1.0))] == [2, 3, 4]
    core.receive_data(b"Error:No Checksum with line number, Last Line: 2\nResend: 3\nok\n", 1.0)
    assert [n for n, _ in framed(core.data_to_send(1.0))] == [3]  # alone: the ring may hold leftovers
    core.receive_data(b"Error:checksum mismatch, Last Line: 2\nResend: 3\nok\n", 1.001)
    assert [n for n, _ in framed(core.data_to_send(1.001))] == [3]  # at once, not after a probe
    core.receive_data(b"ok N2 P14 B3\nok N3 P13 B3\n", 1.002)
    assert [n for n, _ in framed(core.data_to_send(1.002))] == [4]
    core.receive_data(b"ok N4 P13 B3\n", 1.003)
    assert acked(core) == [2, 3, 4]


def test_bug6_an_echo_then_silence_sends_the_line_again():
    """An out-of-order request after the copy went out may be an echo of a line that reached Marlin
    after its flush; if nothing else comes, the copy was lost too and goes again (no 5 s stall)."""
    core = connected_marlin()
    for i in (1, 2, 3):
        core.send(f"G1 X{i}", JobPos(i, i))
    core.data_to_send(1.0)
    core.receive_data(b"Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n", 1.0)
    core.data_to_send(1.0)
    core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", 1.01)
    assert core.data_to_send(1.01) == b""
    core.tick(1.2)
    assert [n for n, _ in framed(core.data_to_send(1.2))] == [2]


def test_bug6_window_after_a_resend_never_exceeds_what_the_lost_line_held():
    """Bytes written before Marlin's flush may still be in its ring: until the resent line is answered
    only that one line goes out, so leftovers plus the copy fit in 127 bytes (no byte dropped)."""
    core = connected_marlin()
    for i in range(1, 30):
        core.send(f"G1 X{i}.123 Y{i}.456 E0.00333", JobPos(i, i))
    first = core.data_to_send(1.0)
    assert len(first) <= 127
    core.receive_data(b"Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n", 1.0)
    again = core.data_to_send(1.0)
    assert len(framed(again)) == 1


def test_bug7_temperature_autoreports_do_not_feed_the_ok_watchdog():
    """Recorded: with M155 S2 on, ` T:19.37 /0.00 B:19.37 /0.00 @:0 B@:0` every 2 s kept a lost final
    ok from ever being noticed."""
    core = connected_marlin()
    core.send("G1 X1", JobPos(1, 1))
    core.data_to_send(0.0)
    for t in (2.0, 4.0, 6.0):
        core.receive_data(b" T:19.37 /0.00 B:19.37 /0.00 @:0 B@:0\n", t)
        core.tick(t)
    probes = [e for e in core.events() if isinstance(e, ev.ProbeSent)]
    assert probes, "the watchdog must probe after 5 s without an answer"
    assert "M105" in core.data_to_send(6.0).decode()


def test_bug8_an_ok_without_line_number_is_not_our_lines_and_nothing_is_counted_twice():
    """Recorded: N2 with its `N` flipped to `n` ran as an unknown command and got `ok P15 B3`; the old
    core took that ok for N2's and then counted N2 again after the resend (2,005 lines for 2,004)."""
    core = connected_marlin()
    core.send("G92 X0 E0", JobPos(1, 1))
    core.data_to_send(0.0)
    core.receive_data(b"X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0\nok N2 P15 B3\n", 0.0)
    assert acked(core) == [2]
    core.send("G1 X1 F6000", JobPos(2, 2))
    core.send("G1 X2 F6000", JobPos(3, 3))
    core.data_to_send(0.0)
    core.receive_data(
        b'echo:Unknown command: "n3 G1 X1 F6000"\nok P15 B3\n'
        b"Error:Line Number is not Last Line Number+1, Last Line: 2\nResend: 3\nok\n", 0.0
    )
    assert acked(core) == []
    assert [n for n, _ in framed(core.data_to_send(0.0))] == [3]
    core.receive_data(b"ok N3 P14 B2\n", 0.0)
    core.data_to_send(0.0)
    core.receive_data(b"ok N4 P13 B3\n", 0.0)
    assert acked(core) == [3, 4]


def test_bug8_a_line_damaged_past_its_checksum_is_said_loudly():
    """Recorded: two flips of one bit cancel in the XOR checksum; Marlin ran `F1 X-24.966!Y-19.746`
    as N1221 and answered `ok N1221`. The line is done as far as Marlin is concerned; we say so."""
    core = connected_marlin()
    core.send("G1 X-24.966 Y-19.746 E0.00333", JobPos(7, 7))
    core.data_to_send(0.0)
    core.receive_data(b'echo:Unknown command: "F1 X-24.966!Y-19.746 E0.00333"\nok N2 P12 B3\n', 0.0)
    events = core.events()
    assert [e.seq for e in events if isinstance(e, ev.LineAcked)] == [2]
    warn = [e for e in events if isinstance(e, ev.FirmwareWarning)]
    assert warn and "damaged" in warn[0].text and warn[0].tag == JobPos(7, 7)


def test_marlin_ignores_a_line_it_already_has_so_an_advanced_ok_retires_through_its_number():
    """Recorded: `ok N3` answers line 3 and, Marlin answering in order, every line before it."""
    core = connected_marlin()
    for i in (1, 2):
        core.send(f"G1 X{i}", JobPos(i, i))
    core.data_to_send(0.0)
    core.receive_data(b"ok N3 P13 B3\n", 0.0)  # N2's ok was lost on the way
    assert acked(core) == [2, 3]


# ---- GRBL 1.1h ---------------------------------------------------------------------------------
BANNER = b"\r\nGrbl 1.1h ['$' for help]\r\n"
VERSION = b"[VER:1.1h.20190830:]\r\n[OPT:V,15,128]\r\nok\r\n"


def connected_grbl(
    status: bytes = b"<Idle|MPos:0.000,0.000,0.000|FS:0,0|Pn:PXYZRHS|WCO:0.000,0.000,0.000>\r\n",
):
    core = GrblProtocol(profile("grbl-1.1"), 0.0)
    core.handshake(0.0)
    core.urgent_data()
    core.receive_data(status, 0.1)
    out = core.data_to_send(0.1)
    assert out.startswith(b"$I\n")
    core.receive_data(VERSION, 0.2)
    assert core.data_to_send(0.2) == b"$$\n"
    core.receive_data(b"$0=10\r\n$22=1\r\nok\r\n", 0.3)
    return core


def test_bug1_hold_1_is_still_decelerating_and_hold_0_is_stopped():
    """Recorded during a feed hold: Hold:1 while FS falls to 0, then Hold:0. A reset in Hold:1 threw ALARM:3."""
    core = connected_grbl()
    assert core.feed_hold() == b"!"
    assert not core.motion_stopped  # nothing known until a report made after the hold
    core.receive_data(b"<Hold:1|MPos:0.360,0.000,0.000|FS:84,0|Pn:PXYZRHS>\r\n", 0.0)
    assert not core.motion_stopped
    core.receive_data(b"<Hold:1|MPos:0.528,0.000,0.000|FS:0,0|Pn:PXYZRHS>\r\n", 0.0)
    assert not core.motion_stopped
    core.receive_data(b"<Hold:0|MPos:0.528,0.000,0.000|FS:0,0|Pn:PXYZRHS>\r\n", 0.0)
    assert core.motion_stopped


def test_bug2_a_controller_already_in_alarm_at_connect_is_seen_as_alarmed():
    """Recorded after a restart with $22=1: no ALARM:n and no banner reach a late host, only the status."""
    core = connected_grbl(b"<Alarm|MPos:0.000,0.000,0.000|FS:0,0|Pn:PXYZRHS|WCO:0.000,0.000,0.000>\r\n")
    assert core.alarm_locked
    info = [e for e in core.events() if isinstance(e, ev.FirmwareInfo)]
    assert info, "identity comes once the status is known"
    core.unlock()
    assert core.data_to_send(1.0).endswith(b"$X\n")
    core.receive_data(b"[MSG:Caution: Unlocked]\r\nok\r\n<Idle|MPos:0.000,0.000,0.000|FS:0,0>\r\n", 1.1)
    assert not core.alarm_locked


def test_bug3_nothing_is_written_before_the_controller_shows_it_is_up():
    """A `$I` written while the controller boots is answered after its banner and shifted every later
    answer by one line. Now nothing goes out before a banner or a status report."""
    core = GrblProtocol(profile("grbl-1.1"), 0.0)
    core.handshake(0.0)
    assert core.data_to_send(0.0) == b""
    core.receive_data(b"ok\r\n", 0.5)  # an answer to something written before we connected
    assert core.data_to_send(0.5) == b""
    core.tick(2.1)  # open_delay_s without a sign of life: a soft reset
    assert b"\x18" in core.urgent_data()
    core.receive_data(BANNER, 2.2)
    assert core.data_to_send(2.2) == b""  # late answers to lines written before the reset may still come
    core.receive_data(b"error:9\r\n", 2.3)
    assert core.data_to_send(2.5) == b"$I\n"
    core.receive_data(VERSION, 2.6)
    acks = [e.text for e in core.events() if isinstance(e, ev.LineAcked)]
    assert acks == ["$I"]


def test_bug3_a_reboot_banner_while_idle_waits_for_late_answers_before_greeting_again():
    core = connected_grbl()
    core.events()
    core.receive_data(BANNER, 1.2)
    core.receive_data(b"ok\r\n", 1.3)  # an answer to a line written just before the reset
    assert core.data_to_send(1.3) == b""
    assert core.data_to_send(1.6) == b"$I\n"
    core.receive_data(VERSION, 1.7)
    assert [e.text for e in core.events() if isinstance(e, ev.LineAcked)] == ["$I"]


def test_oks_from_before_our_m110_do_not_answer_our_lines():
    """After a reconnect, Marlin still answers the lines it had queued under the old numbers
    (`ok N70`): those are none of ours; the old core took them for the M110's and M115's answers and
    never saw the firmware's identity (found by bench/streaming.py's e-stop and reconnect loop)."""
    core = MarlinProtocol(profile("marlin2"), 0.0)
    core.handshake(0.0)
    core.data_to_send(0.0)
    core.receive_data(b"B2\nok N70 P0 B1\n", 0.0)  # the tail and the rest of the old session
    assert core.data_to_send(0.0) == b""  # the M110 is still unanswered
    core.receive_data(b"ok N0 P0 B2\n", 0.0)
    assert framed(core.data_to_send(0.0)) == [(1, "M115")]
    core.receive_data(b"ok N71 P0 B0\n" + M115_TAIL, 0.0)
    assert [e for e in core.events() if isinstance(e, ev.FirmwareInfo)]


def test_a_boot_banner_behind_our_m110_greets_once_not_twice():
    """Recorded: socat starts Marlin, whose `start` and settings dump are still unread when our M110
    goes out; the M115 left queued from the first hello went out before the second hello's M110 and
    then again after it: M115 run twice and M155 S2 sent twice on every first connect."""
    core = MarlinProtocol(profile("marlin2"), 0.0)
    core.handshake(0.0)
    assert framed(core.data_to_send(0.0)) == [(0, "M110 N0")]
    core.receive_data(b"start\nPowerUp\nMarlin 2.1.2\necho:  M301 P22.20 I1.08 D114.00\n", 0.002)
    core.receive_data(b"ok N0 P15 B3\n", 0.006)  # the first M110's answer, inside the quiet moment
    assert framed(core.data_to_send(0.3)) == [(0, "M110 N0")]
    core.receive_data(b"ok N0 P15 B3\n", 0.31)
    assert framed(core.data_to_send(0.31)) == [(1, "M115")]
    core.receive_data(M115_TAIL, 0.32)
    assert core.data_to_send(0.33) == b""
    assert len([e for e in core.events() if isinstance(e, ev.FirmwareInfo)]) == 1


def test_after_our_reset_only_the_banner_ends_the_greeting():
    """A status report made before the reset byte was acted on must not let `$I` out early: written
    before the reboot, it would be answered after the banner, one answer ahead of its line."""
    core = connected_grbl()
    core.soft_reset()
    core.receive_data(b"<Idle|MPos:0.000,0.000,0.000|FS:0,0>\r\n", 1.0)
    assert core.data_to_send(1.0) == b""
    core.receive_data(BANNER, 1.1)
    assert core.data_to_send(1.4) == b"$I\n"
