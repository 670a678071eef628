"""The machine thread's naps while a job streams (machine/pacing.py) and the port's nap (link.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from afn_agent.machine.link import LINE_END_S, SerialLink
from afn_agent.machine.pacing import LATE_FADE, NAP_MAX_S, PROBE_BYTES, SLACK_S, Pacer

LINE = 39  # bytes of `N1234 G1 X110.123 Y107.456 E12.34567*89\n`
WIRE_250K = 10 / 250000


def test_a_nap_ends_a_slack_before_the_bytes_written_are_through():
    p = Pacer(250000)
    p.wrote(LINE, 0.0)
    assert p.nap_s(0.0) == pytest.approx(LINE * WIRE_250K - SLACK_S)
    p.wrote(LINE, 0.0005)  # behind the first line, not from the time it was written
    assert p.busy_until == pytest.approx(2 * LINE * WIRE_250K)
    assert p.nap_s(p.busy_until - SLACK_S) == 0.0  # nothing in hand: the port is watched instead


def test_the_wire_goes_quiet_in_the_model_when_nothing_was_written():
    p = Pacer(250000)
    p.wrote(LINE, 0.0)
    p.wrote(LINE, 1.0)  # a second later: the first line is long through
    assert p.busy_until == pytest.approx(1.0 + LINE * WIRE_250K)


def test_naps_are_bounded_and_short_ones_are_not_taken():
    p = Pacer(9600)
    p.wrote(4000, 0.0)
    assert p.nap_s(0.0) == NAP_MAX_S
    q = Pacer(250000)
    q.wrote(20, 0.0)  # 0.8 ms on the wire, less the slack: not worth a wake-up
    assert q.nap_s(0.0) == 0.0


def test_a_firmware_faster_than_its_baud_shortens_the_naps():
    """A native-USB board reads far faster than its nominal baud: the measured pace counts."""
    p = Pacer(115200)
    p.answered(LINE, 0.0)
    p.answered(LINE, 0.0004)  # a line answered every 0.4 ms: ~10 µs a byte, not 87
    p.wrote(3 * LINE, 1.0)
    assert p.busy_until - 1.0 == pytest.approx(3 * LINE * 0.0004 / LINE)
    p.reset()  # a new job: the old pace is forgotten, the baud counts again
    p.wrote(3 * LINE, 2.0)
    assert p.busy_until - 2.0 == pytest.approx(3 * LINE * 10 / 115200)


def test_late_wake_ups_keep_more_in_hand_and_the_lateness_fades():
    p = Pacer(115200)
    p.wrote(3 * LINE, 0.0)
    calm = p.nap_s(0.0)
    for _ in range(8):
        p.woke(0.002, 0.0025)  # every nap ended 0.5 ms late: a loaded machine
    assert p.nap_s(0.0) == pytest.approx(calm - 3 * 0.0005, abs=1e-4)
    p.woke(0.002, 0.0005)  # cut short by a command: not lateness
    for _ in range(40):
        p.woke(0.0, 0.001)  # turns that watched the port
    assert p.nap_s(0.0) == pytest.approx(calm, abs=1e-5)


def test_one_late_wake_up_among_punctual_ones_is_kept_in_mind():
    """Under contention a wake-up is now and then a time slice late; an average of the turns would
    forget it in a few punctual turns and the next late one would find the wire quiet (issue 22)."""
    p = Pacer(115200)
    p.woke(0.002, 0.006)  # a hog's time slice: 4 ms late
    for _ in range(5):
        p.woke(0.002, 0.002)
    assert p.late_s == pytest.approx(0.004 * LATE_FADE**5)  # the old average: 0.004 * 0.75**5, 1 ms
    assert p.late_s > 0.003


def test_the_wire_s_jitter_is_not_taken_for_a_faster_firmware():
    """Answers a little early now and then must not shorten the model: it would end naps before the
    answers come and cost a second wake-up each (seen on the bench: 9 turns in 10 followed a half line)."""
    p = Pacer(250000)
    p.answered(LINE, 0.0)
    p.answered(LINE, LINE * WIRE_250K * 0.9)  # 10 % early: jitter, not a native-USB board
    p.wrote(3 * LINE, 1.0)
    assert p.busy_until - 1.0 == pytest.approx(3 * LINE * WIRE_250K)


def steady(p: Pacer, every: float, answers: int = 4, start: float = 0.0) -> float:
    """Answers ending every `every` seconds, each read as it ended (its rest followed)."""
    t = start
    for _ in range(answers):
        p.answered(LINE, t, 1, ended_now=True)
        t += every
    return t - every


def test_a_nap_ends_as_an_answer_due_before_the_wire_goes_quiet_is_whole():
    """Not inside an answer (a second wake-up to read its rest): at the end of the last one due
    before the wire model's point, or of the next one when that is all the wire allows."""
    p = Pacer(250000)
    every = LINE * WIRE_250K
    last = steady(p, every)
    due = last + every - PROBE_BYTES * WIRE_250K
    assert p.next_answer == pytest.approx(due)
    p.wrote(4 * LINE, last)  # the wire busy for four lines: three more answers are due before then
    assert p.nap_s(last) == pytest.approx(due - last + 2 * every)
    q = Pacer(250000)
    last = steady(q, every)
    q.wrote(2 * LINE, last)  # two lines: only the next answer is due before the wire goes quiet
    assert q.nap_s(last + 0.0001) == pytest.approx(due - last - 0.0001)
    q.woke(0.001, 0.0012)  # naps end 0.2 ms late: they are asked that much shorter
    assert q.nap_s(last + 0.0001) == pytest.approx(due - last - 0.0001 - q.late_s)


def test_the_wire_going_quiet_first_still_ends_the_nap_first():
    """Where the window is the limit the wire goes quiet before the next answer: the nap ends before
    that, as without a known pace (waking only at answers would idle the wire at every late wake-up)."""
    p = Pacer(250000)
    last = steady(p, 0.004)
    p.wrote(LINE, last)
    assert p.nap_s(last) == pytest.approx(LINE * WIRE_250K - SLACK_S)


def test_an_answer_read_whole_is_taken_to_have_ended_when_due():
    p = Pacer(250000)
    every = LINE * WIRE_250K
    last = steady(p, every)
    due = p.next_answer
    p.answered(LINE, due + 0.0003, 1)  # read whole 0.3 ms after it was due: it ended by then
    assert p.answer_every_s == pytest.approx(every, rel=0.05)
    assert p.next_answer == pytest.approx(due + p.answer_every_s - PROBE_BYTES * WIRE_250K)
    two = p.next_answer + p.answer_every_s
    p.answered(2 * LINE, two + 0.0001, 2)  # a late turn found two
    assert p.next_answer == pytest.approx(two + p.answer_every_s - PROBE_BYTES * WIRE_250K)
    assert last < due < two


def test_a_new_job_forgets_the_answers_pace():
    p = Pacer(250000)
    steady(p, 0.0015)
    p.reset()
    assert p.next_answer == 0.0 and p.answer_every_s == 0.0


@pytest.fixture
def pty_link():
    """A SerialLink on the slave side of a pty; the test writes the firmware's side (the master)."""
    master, slave = os.openpty()
    link = SerialLink(os.ttyname(slave), 115200)
    link.open()
    os.close(slave)
    yield link, master
    link.close()
    link.release()
    os.close(master)


def test_a_nap_returns_what_came_meanwhile_whole(pty_link):
    link, fw = pty_link
    threading.Timer(0.02, lambda: os.write(fw, b"ok N1 P15 B3\nok N2 P15 B3\n")).start()
    assert link.wait(1.0, nap=0.1) == b"ok N1 P15 B3\nok N2 P15 B3\n"


def test_a_nap_with_nothing_come_is_not_a_vanished_port(pty_link):
    """A raw tty answers "nothing yet" as it answers "hung up" (0 bytes): a read not asked for by
    select must not take the first for the second."""
    link, _ = pty_link
    assert link.wait(0.05, nap=0.01) == b""


def test_a_half_answer_after_a_nap_is_followed_to_its_end(pty_link, monkeypatch):
    """The rest comes 30 ms on: inside the follow's window, made wide here so that a late timer on a
    loaded machine cannot fall after it (at its 20 ms the test raced its own timer)."""
    from afn_agent.machine import link as link_module

    monkeypatch.setattr(link_module, "LINE_END_S", 1.0)
    link, fw = pty_link
    os.write(fw, b"ok N1 P1")
    threading.Timer(0.03, lambda: os.write(fw, b"5 B3\n")).start()
    assert link.wait(1.0, nap=0.01) == b"ok N1 P15 B3\n" and link.followed


def test_the_nap_s_own_length_is_kept_apart_from_the_follow(pty_link):
    """The pacer measures a nap's lateness: counting the half answer's follow in it made every nap
    shorter, and so the next one ended before its answer again (a second wake-up per line)."""
    link, fw = pty_link
    os.write(fw, b"ok N1 P1")  # its rest never comes: followed for the longest a line is
    started = time.monotonic()
    assert link.wait(1.0, nap=0.005) == b"ok N1 P1"
    took = time.monotonic() - started
    assert link.followed
    assert 0.005 <= link.napped_s <= took - 0.9 * LINE_END_S
    os.write(fw, b"5 B3\nok N2 P15 B3\n")
    assert link.wait(1.0, nap=0.001) == b"5 B3\nok N2 P15 B3\n"
    assert not link.followed


def test_a_command_posted_during_a_nap_wakes_the_thread_at_once(pty_link):
    link, _ = pty_link
    threading.Timer(0.02, link.wake).start()
    started = time.monotonic()
    assert link.wait(5.0, nap=2.0) == b""
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("sleep_for_rest", [True, False])
def test_where_every_line_waits_for_its_answer_its_rest_is_not_slept_for(pty_link, sleep_for_rest, monkeypatch):
    """Pingpong: the thread is woken by the answer's last bytes instead of sleeping for the length of a
    long one (the sleep's overshoot cost pingpong streams 3-4 %, issue 22)."""
    from afn_agent.machine import link as link_module

    monkeypatch.setattr(link_module, "LINE_END_S", 1.0)  # a late timer must not fall after the follow
    link, fw = pty_link
    link.sleep_for_rest = sleep_for_rest
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    os.write(fw, b"ok")
    threading.Timer(0.002, lambda: os.write(fw, b"\n")).start()
    assert link.wait(1.0) == b"ok\n"
    assert slept == ([14 * 10 / 115200] if sleep_for_rest else [])
