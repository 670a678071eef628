"""The compiled exchange (machine/_express.c) against the Python core's own path.

A firmware stand-in answers on a real pty; the exchange writes, waits and reads there. What it decides
(which lines go out when, which answers it takes) must be what the Python core decides from the same
answers, and the core's replay must leave the same state and the same events.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import termios
import threading
import time
import tty
from dataclasses import replace
from itertools import groupby

import pytest

from afn_agent.firmware import events as ev
from afn_agent.firmware.framing import frame
from afn_agent.firmware.marlin import MarlinProtocol
from afn_agent.firmware.marlin_lines import PLAIN_OK_RE
from afn_agent.machine import _express
from tests.helpers import framed, profile

LINE = re.compile(rb"N(\d+) ")


def steady() -> MarlinProtocol:
    """A core past its handshake with ADVANCED_OK, numbering from 1, nothing owed."""
    core = MarlinProtocol(profile(), 0.0)
    core.capabilities["ADVANCED_OK"] = True
    return core


def line_by_line(events: list[ev.Event]) -> list[ev.Event]:
    """A burst's LinesAcked as the LineAcked of each line, as the Python path says them."""
    return [x for e in events for x in (e.each() if isinstance(e, ev.LinesAcked) else [e])]


def acked_seqs(core: MarlinProtocol) -> list[int]:
    return [e.seq for e in line_by_line(core.events()) if isinstance(e, ev.LineAcked)]


def moves(n: int, start: int = 0) -> list[tuple[str, object]]:
    return [(f"G1 X{i % 100}.{i:03d} Y{(i * 7) % 100}.5 E{i * 0.0123:.4f}", i) for i in range(start, start + n)]


class Pty:
    """The exchange's side of a pty (raw, non-blocking, as the agent opens a port) and the far side."""

    def __init__(self) -> None:
        self.far, self.port = os.openpty()
        tty.setraw(self.port)
        os.set_blocking(self.port, False)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.lock = _express.WriteLock()
        self.stop = threading.Event()  # ends the firmware stand-in's thread
        self.threads: list[threading.Thread] = []

    def run(self, core: MarlinProtocol, batch, seconds: float = 5.0):
        return _express.exchange(
            self.port, self.wake_r, self.lock, batch.wires, batch.oldest, batch.win_start, batch.next_seq,
            batch.sizes, batch.limit, batch.depth, seconds, 2.0,
        )  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2.0)  # before the fds close: a new pty may get the same numbers
        for fd in (self.far, self.port, self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def pty_pair():
    p = Pty()
    yield p
    p.close()


def firmware(p: Pty, answer, hold: float = 0.0) -> bytearray:
    """Reads whole lines from the far side and writes what `answer(n)` says for line N<n> (None: no
    answer); with `hold`, that share of answers waits for the next one, or for 5 ms of quiet."""
    rng = random.Random(3)

    def serve() -> None:
        buf, held = b"", b""
        while not p.stop.is_set():
            ready, _, _ = select.select([p.far], [], [], 0.005)
            if not ready:
                if held:
                    os.write(p.far, held)
                    held = b""
                continue
            try:
                data = os.read(p.far, 4096)
            except OSError:
                return
            heard.extend(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = LINE.match(line)
                said = answer(int(m[1])) if m else None
                if said is None:
                    continue
                held += said
                if rng.random() >= hold:
                    os.write(p.far, held)
                    held = b""

    heard = bytearray()
    p.threads.append(t := threading.Thread(target=serve, daemon=True))
    t.start()
    return heard


def test_the_exchange_writes_what_the_python_core_would_and_the_replay_matches_its_events(pty_pair):
    rng = random.Random(7)
    depth = profile().link.queue_depth

    def answer(n: int) -> bytes:
        return f"ok N{n} P{rng.randint(0, 15)} B{rng.randint(0, depth - 1)}\n".encode()

    firmware(pty_pair, answer, hold=0.4)  # several answers in one read, now and then
    a, b = steady(), steady()
    lines = moves(300)
    batch = a.express_lines(lines, 0.0)
    assert batch is not None and len(batch.wires) == 300
    why, sent, written, oks, _, err, answered, received = pty_pair.run(a, batch)
    assert (why, sent, err) == (_express.DONE, 300, 0)
    assert written == sum(len(w) for w in batch.wires)
    a.express_done(batch, sent, oks, 1.0, answered=answered, received=received)

    # the Python path, fed the same answers at the same points
    for text, tag in lines:
        b.send(text, tag)
    out = 0
    for before, group in groupby(oks, key=lambda ok: ok[3]):
        out += len(framed(b.data_to_send(1.0)))
        assert out == before  # the exchange wrote exactly what data_to_send would have, at each point
        b.receive_data(b"".join(f"ok N{n} P{p} B{q}\n".encode() for n, p, q, _ in group), 1.0)
    out += len(framed(b.data_to_send(1.0)))
    assert out == 300
    assert line_by_line(a.events()) == b.events()
    assert a.window.bytes == b.window.bytes and [x.seq for x in a.window.lines] == [x.seq for x in b.window.lines]
    assert [x.seq for x in a._received] == [x.seq for x in b._received]
    assert (a.planner_free, a.queue_free, a.lines_heard) == (b.planner_free, b.queue_free, b.lines_heard)
    # the burst's lines, kept as its lists, are what a resend finds: the last 512 lines, as SentLines
    assert len(a._history) == len(b._history) == 300 and a._history.last_text() == b._history.last_text()
    assert a._history.since(40) == b._history.since(40) and len(a._history.since(40)) == 261


def test_a_resend_reaching_back_into_bursts_resends_their_lines_as_the_python_path_would():
    """Bursts replayed without their answered lines ever being SentLines: the history still holds the
    last 512 lines sent, so a resend from any of them (the firmware's ask, then its Resend again)
    writes the same bytes as a core that sent them one by one."""
    a, b = steady(), steady()
    lines = moves(700)
    for start in range(0, 700, 100):  # seven bursts, each answered through its last line
        batch = a.express_lines(lines[start : start + 100], 0.0)
        assert batch is not None
        last = batch.next_seq + 99
        a.express_done(batch, 100, [(last, 15, 3, 100)], 1.0, answered=last, received=last)
        for text, tag in lines[start : start + 100]:  # one by one: each line answered as it goes
            b.send(text, tag)
            for n in LINE.findall(b.data_to_send(1.0)):
                b.receive_data(b"ok N%s P15 B3\n" % n, 1.0)
    assert line_by_line(a.events()) == b.events()
    assert a._history.first_seq() == b._history.first_seq() == 700 - 512 + 1
    for core in (a, b):
        core.receive_data(b"Error:Line Number is not Last Line Number+1, Last Line: 649\nResend: 650\n", 2.0)
    assert a.data_to_send(2.0) == b.data_to_send(2.0) == frame(650, lines[649][0])
    gone = "the firmware asked to resend line 100, which is no longer held (held: 189..700)"
    for core in (a, b):
        core.receive_data(b"ok\nResend: 100\n", 3.0)
        assert [e.reason for e in core.events() if isinstance(e, ev.Fault)] == [gone]


def test_the_window_never_holds_more_than_the_rx_ring_by_the_firmware_own_count(pty_pair):
    """The stand-in answers with the queue it really has (nothing run: B says the queue is full), so
    what the exchange may write is bounded by the ring: never more unread bytes than the window."""
    core = steady()
    firmware(pty_pair, lambda n: f"ok N{n} P15 B3\n".encode())
    batch = core.express_lines(moves(100), 0.0)
    assert batch is not None
    why, _, _, oks, _, _, _, _ = pty_pair.run(core, batch)
    assert why == _express.DONE
    sizes = [len(w) for w in batch.wires]
    for n, _, _, before in oks:  # when line n was answered, lines after it had been written: still in the ring
        assert sum(sizes[n:before]) <= batch.limit


@pytest.mark.parametrize(
    "said",
    [b"ok N1 P15 B3", b"ok N1 P15 B3\r", b"ok N1 P15 B3 \x00\r", b"ok N1 P15 B3x", b"ok N1  P15 B3",
     b"ok N1 P15", b"ok N01 P015 B3", b"ok N1 P15 B3 T:20.0 /0.0", b"ok n1 P15 B3", b"okN1 P1 B1",
     b"ok N P1 B1", b"ok N2 P1 B1", b"ok N0 P1 B1", b"ok N1234567890 P1 B1", b"ok N1 P1 B1234567890",
     b"Resend: 1", b"echo:busy: processing", b"ok"],
)  # fmt: skip
def test_an_answer_is_taken_in_c_exactly_when_the_core_would_take_it_as_a_plain_ok(pty_pair, said):
    core = steady()
    firmware(pty_pair, lambda n: said + b"\n" if n == 1 else None)
    batch = core.express_lines(moves(2), 0.0)
    assert batch is not None
    batch = replace(batch, limit=len(batch.wires[0]))  # line 2 fits only once line 1 has left the ring
    why, _, _, oks, rest, _, _, _ = pty_pair.run(core, batch, seconds=0.2)
    m = PLAIN_OK_RE.fullmatch(said)
    plain = m is not None and all(len(g) <= 9 for g in m.groups()) and int(m[1]) < 2
    assert bool(oks) == plain
    if plain:
        assert rest == b"" and why in (_express.DONE, _express.TIME)
    else:
        assert (why, rest) == (_express.OTHER, said + b"\n")


def test_any_other_line_ends_the_burst_and_goes_to_the_core_with_what_follows(pty_pair):
    core = steady()
    answers = {1: b"ok N1 P15 B3\n", 2: b"echo:busy: processing\nok N2 P15 B3\n"}
    firmware(pty_pair, answers.get)
    batch = core.express_lines(moves(40), 0.0)
    assert batch is not None
    why, sent, _, oks, rest, _, answered, received = pty_pair.run(core, batch)
    assert why == _express.OTHER and [ok[0] for ok in oks] == [1]
    assert rest.startswith(b"echo:busy: processing\n")
    core.express_done(batch, sent, oks, 1.0, answered=answered, received=received)
    core.receive_data(rest, 1.0)
    got = line_by_line(core.events())
    assert [e.seq for e in got if isinstance(e, ev.LineAcked)] == [1, 2][: 1 + rest.count(b"ok N2")]
    assert ev.Busy("processing") in got


def test_a_wake_up_ends_the_burst_at_once_and_the_port_settings_are_put_back(pty_pair):
    core = steady()
    before = termios.tcgetattr(pty_pair.port)
    batch = core.express_lines(moves(40), 0.0)
    assert batch is not None
    threading.Timer(0.05, os.write, (pty_pair.wake_w, b"w")).start()
    started = time.monotonic()
    why, sent, _, oks, rest, _, answered, received = pty_pair.run(core, batch, seconds=5.0)  # nobody answers
    assert why == _express.WOKEN and time.monotonic() - started < 1.0
    assert sent >= 1 and oks == [] and rest == b"" and answered == received == -1
    assert termios.tcgetattr(pty_pair.port) == before
    assert os.read(pty_pair.far, 4096) == b"".join(batch.wires[:sent])


def test_a_port_that_hangs_up_is_lost_after_the_answers_before_it_are_kept(pty_pair):
    core = steady()
    batch = core.express_lines(moves(40), 0.0)
    assert batch is not None

    def firmware_dies() -> None:
        select.select([pty_pair.far], [], [], 2.0)
        os.read(pty_pair.far, 4096)
        os.write(pty_pair.far, b"ok N1 P15 B3\n")
        time.sleep(0.05)
        os.close(pty_pair.far)

    threading.Thread(target=firmware_dies, daemon=True).start()
    why, sent, _, oks, _, _, answered, received = pty_pair.run(core, batch)
    assert why == _express.LOST
    assert [ok[0] for ok in oks] == [1]
    core.express_done(batch, sent, oks, 1.0, answered=answered, received=received)
    assert acked_seqs(core) == [1]


def test_a_writer_holding_the_port_lock_holds_the_exchange_writes_back(pty_pair):
    """An e-stop written from another thread takes the same lock: never inside one of the burst's writes."""
    core = steady()
    batch = core.express_lines(moves(5), 0.0)
    assert batch is not None
    pty_pair.lock.acquire()
    done: list[tuple] = []
    t = threading.Thread(target=lambda: done.append(pty_pair.run(core, batch, seconds=2.0)), daemon=True)
    t.start()
    time.sleep(0.2)
    assert select.select([pty_pair.far], [], [], 0)[0] == []  # nothing written while the lock is held
    os.write(pty_pair.port, b"M112\n")
    pty_pair.lock.release()
    t.join(5.0)
    assert os.read(pty_pair.far, 4096).startswith(b"M112\n" + batch.wires[0])


def test_nothing_goes_by_the_exchange_unless_the_stream_is_steady():
    core = steady()
    assert core.express_lines([("M104 S200", 0), *moves(3)], 0.0) is None  # not a plain move at the head
    batch = core.express_lines([*moves(3), ("M104 S200", 0), *moves(3, 3)], 0.0)
    assert batch is not None and batch.texts == [t for t, _ in moves(3)]  # up to the first other line
    assert batch.wires[0] == frame(1, moves(1)[0][0])
    core.send("M105", host=True)
    assert core.express_lines(moves(3), 0.0) is None  # a host line waits
    fresh = MarlinProtocol(profile(), 0.0)
    assert fresh.express_lines(moves(3), 0.0) is None  # ADVANCED_OK not known yet


def test_job_lines_the_python_path_queued_go_first_in_the_next_burst():
    """After a line only the Python path writes (an M204 between moves), the moves it queued behind it
    start the next burst: the stream goes back to the exchange instead of staying on the Python path
    (it stayed there for good on real slicer files until this test)."""
    core = steady()
    core.send("M204 S1000", "m204")
    for text, tag in moves(8):
        core.send(text, tag)
    assert core.express_lines(moves(3, 8), 0.0) is None  # the M204 is the core's to write
    assert core.data_to_send(0.0).startswith(b"N1 M204 S1000*")  # and as many moves as the window takes
    core.receive_data(b"ok N1 P15 B3\n", 0.0)
    queued = list(core._job)
    assert queued and core.outstanding == 8 - len(queued)
    batch = core.express_lines(moves(3, 8), 0.0)
    assert batch is not None and batch.queued == len(queued)
    assert batch.texts == [t for t, _ in queued + moves(3, 8)] and batch.tags == [*range(8 - len(queued), 11)]
    assert batch.wires == [frame(batch.next_seq + i, t) for i, t in enumerate(batch.texts)]
    core.express_done(batch, 2, [], 0.0, answered=-1, received=-1)  # two went out: the first two queued
    assert list(core._job) == queued[2:] and core._next_seq == batch.next_seq + 2
    assert [x.tag for x in core.window.lines][-2:] == [t for _, t in queued[:2]]
    core._job.append(("M400", "end"))
    assert core.express_lines(moves(3, 8), 0.0).texts == [t for t, _ in queued[2:]]  # up to the M400


def test_answers_already_waiting_half_read_when_the_burst_starts_are_read_whole(pty_pair):
    """Bytes that came while the port was raw, a line and a half, are read when canonical mode begins;
    the half line's rest, when it comes."""
    core = steady()
    first = core.express_lines(moves(2), 0.0)
    assert first is not None
    os.write(pty_pair.port, b"".join(first.wires))  # as the Python path would have written them
    core.express_done(first, 2, [], 0.0, answered=-1, received=-1)
    os.write(pty_pair.far, b"ok N1 P15 B3\nok N2 P1")
    time.sleep(0.05)  # the bytes reach the port's buffer while it is raw
    threading.Timer(0.05, os.write, (pty_pair.far, b"5 B3\n")).start()
    batch = core.express_lines(moves(3, 2), 0.0)
    assert batch is not None and batch.oldest == 1 and batch.next_seq == 3
    batch = replace(batch, limit=batch.sizes[-1])  # line 3 waits for line 2's ok: its half must be read
    _, sent, _, oks, rest, _, answered, received = pty_pair.run(core, batch, seconds=0.3)
    assert [ok[:3] for ok in oks] == [(1, 15, 3), (2, 15, 3)] and rest == b""
    core.express_done(batch, sent, oks, 1.0, answered=answered, received=received)
    assert acked_seqs(core) == [1, 2]


def test_a_huge_line_from_a_broken_peer_ends_the_burst_and_goes_to_the_core_bounded(pty_pair):
    """5,000 bytes without an end, then one: the kernel keeps at most a 4 KB line, the exchange hands
    what it holds to the core, and nothing is taken for an ok."""
    core = steady()
    firmware(pty_pair, lambda n: b"ok N1" + b"7" * 5000 + b" P15 B3\n" if n == 1 else None)
    batch = core.express_lines(moves(10), 0.0)
    assert batch is not None
    why, sent, _, oks, rest, _, answered, received = pty_pair.run(core, batch, seconds=1.0)
    assert (why, oks) == (_express.OTHER, []) and 0 < len(rest) <= 4096 and rest.startswith(b"ok N177")
    core.express_done(batch, sent, oks, 1.0, answered=answered, received=received)
    python_path = steady()
    python_path.send(moves(1)[0][0], 0)
    python_path.data_to_send(0.0)
    python_path.receive_data(rest, 1.0)
    core.receive_data(rest, 1.0)
    assert core.events()[-1:] == python_path.events()[-1:]  # read as the Python path reads it


def test_a_host_line_answered_within_a_burst_is_said_alone_and_not_among_the_job_lines():
    """An M155 the Python path wrote just before the burst, answered by the burst's oks: it is acked on
    its own with its own tag, so the job neither counts it as one of its lines nor feeds it to the
    usage analysis (a 300-line job was billed 302 lines until this test)."""
    core = steady()
    core.send("M155 S2", "poll", host=True)
    assert core.data_to_send(0.0).startswith(b"N1 M155 S2*")
    batch = core.express_lines(moves(5), 0.0)
    assert batch is not None and batch.next_seq == 2
    core.express_done(batch, 5, [(6, 15, 3, 5)], 1.0, answered=6, received=6)
    said = core.events()
    assert [type(e) for e in said] == [ev.LineAcked, ev.LinesAcked]
    assert (said[0].seq, said[0].text, said[0].tag) == (1, "M155 S2", "poll")
    assert said[1].first == 2 and said[1].tags == tuple(range(5)) and core.outstanding == 0


def test_a_profile_that_waits_long_on_moves_keeps_every_burst_line_marked_and_said_as_the_python_path():
    """With G1 among the profile's long commands (a slow machine's moves), every line of a burst is a
    SentLine marked long (the ok-watchdog waits for it), and what the burst leaves, events included,
    is the Python path's for the same answers."""
    slow = profile(long_commands=("G1", "G28"))
    a, b = MarlinProtocol(slow, 0.0), MarlinProtocol(slow, 0.0)
    for core in (a, b):
        core.capabilities["ADVANCED_OK"] = True
    lines = moves(4)  # what the window takes at once
    batch = a.express_lines(lines, 0.0)
    assert batch is not None
    depth = slow.link.queue_depth
    a.express_done(batch, 4, [(2, 15, 1, 4)], 1.0, answered=2, received=min(2 + depth - 1 - 1, 4))
    for text, tag in lines:
        b.send(text, tag)
    assert len(framed(b.data_to_send(1.0))) == 4
    b.receive_data(b"ok N2 P15 B1\n", 1.0)
    assert line_by_line(a.events()) == b.events()
    assert [x.seq for x in a._received] == [x.seq for x in b._received]
    assert [x.seq for x in a.window.lines] == [x.seq for x in b.window.lines]
    assert [x.seq for x in (*a._received, *a.window.lines)] == [3, 4]
    assert all(x.long for x in (*a._received, *a.window.lines))
