"""How long the machine thread may sleep while a job streams, instead of watching the port.

Each turn of the machine thread has a fixed cost (a wake-up, a read, a write, the turn's checks), paid
once per line while a job streams: what a Raspberry Pi cannot afford at full link speed (issue 22).
Watching the port costs more than the turn: the firmware's answer trickles in a few bytes at a time and
every arrival wakes a thread that watches, then the rest of the line is waited for (link.py). A thread
that sleeps without watching wakes once, on its timer, and finds whole answers.

So while a job streams, the thread sleeps (a command posted by another thread still wakes it at once)
until shortly before the bytes already written have all crossed the wire, by a model of the wire: the
bytes written and the time per byte, the baud rate's or less when the firmware has lately taken less
(a native-USB board reads far faster than its nominal baud). The model counts only what it saw written
since the wire last went quiet by its reckoning, so it never thinks the firmware has more in hand than
it has. The time kept in hand grows with the latest of the thread's recent wake-ups (fading by turn,
not averaged: under contention one wake-up in a few is a time slice late, and an average forgot it
before the next: 0.936–0.958 of the link instead of 0.955–0.968 with three CPU hogs, issue 22).

Once answers come at a steady pace, the nap ends instead when the last answer due before that point
should be whole: a nap that ends inside an answer costs a second wake-up to read its rest. The pace is
the interval between answers' ends; an answer's end is known when the port was read as it ended (its
rest followed, link.py) and otherwise taken to be when it was due. Each due time is put a little
earlier than the pace says, so a phase that has slipped late is found again by a half answer, at the
price of one wake-up.
(Waking only at answers' ends would be cheaper still, but where the window is the limit, over a link
with latency, the wire then waits for every late wake-up: 0.72 of the link instead of 0.83, issue 22.)
"""

from __future__ import annotations

NAP_MIN_S = 0.0005  # a shorter nap costs a wake-up and saves nothing
NAP_MAX_S = 0.010  # the longest any answer waits for the machine thread while a job streams
SLACK_S = 0.0005  # kept in hand at least: the turn's own work, the answer's way back
LATE_WEIGHT = 3.0  # kept in hand besides: this many times the recent lateness of a wake-up
SMOOTHING = 0.25  # weight of the newest turn in the measured figures
LATE_FADE = 0.95  # a late wake-up is kept in mind, fading by this much a turn
FASTER = 0.8  # a measured pace counts when this much faster than the baud (not the wire's jitter)
PROBE_BYTES = 0.25  # each due time comes this many bytes' time earlier than the pace says


class Pacer:
    """The wire's model and the naps it allows; owned by the machine thread."""

    def __init__(self, baud: int) -> None:
        self.wire_s = 10.0 / max(baud, 1200)  # a byte's time on the wire: 8N1, start and stop bits
        self.per_byte_s = 0.0  # measured: time between turns over the bytes of the lines they saw answered
        self.late_s = 0.0  # how much later than asked the thread's naps have lately ended
        self.busy_until = 0.0  # when the bytes written so far are through, by the model
        self._since: float | None = None  # when the last turn that saw answers ended
        self.answer_every_s = 0.0  # measured: the interval between two answers' ends
        self.next_answer = 0.0  # when the next answer should be whole (0: not known)
        self._last_end: float | None = None  # when the last answer seen ended, exactly or as due

    def wrote(self, nbytes: int, now: float) -> None:
        """Bytes went out: they cross the wire after the ones before them."""
        byte_s = self.per_byte_s if 0 < self.per_byte_s < FASTER * self.wire_s else self.wire_s
        self.busy_until = max(now, self.busy_until) + nbytes * byte_s

    def answered(self, nbytes: int, now: float, lines: int = 1, ended_now: bool = False) -> None:
        """A turn saw `lines` job lines of `nbytes` wire bytes answered (0: none this turn); with
        `ended_now`, the last answer's end was read as it came (its rest followed)."""
        if not nbytes:
            return
        if self._since is not None:
            self.per_byte_s = _smooth(self.per_byte_s, (now - self._since) / nbytes)
        self._since = now
        end = now
        if not ended_now and self.next_answer:  # whole when read: it ended when due, or before
            end = min(now, self.next_answer + (lines - 1) * self.answer_every_s)
        if self._last_end is not None and end > self._last_end:
            self.answer_every_s = _smooth(self.answer_every_s, (end - self._last_end) / max(lines, 1))
            self.next_answer = end + self.answer_every_s - PROBE_BYTES * self.wire_s
        self._last_end = end

    def woke(self, asked: float, took: float) -> None:
        """A turn's nap of `asked` seconds (0: it watched the port) ended after `took`. A wake-up by a
        command is not lateness; a turn without a nap lets an old lateness fade, so naps are tried
        again once a busy spell is over."""
        if not asked:
            self.late_s *= 1.0 - SMOOTHING
        elif took >= asked:
            self.late_s = max(took - asked, self.late_s * LATE_FADE)

    def reset(self) -> None:
        """A job starts, resumes or waits: its earlier pace says nothing of what comes next."""
        self.per_byte_s = 0.0
        self._since = None
        self.answer_every_s = self.next_answer = 0.0
        self._last_end = None

    def nap_s(self, now: float) -> float:
        """How long the thread may sleep before reading; 0 to watch the port instead."""
        nap = self.busy_until - now - SLACK_S - LATE_WEIGHT * self.late_s
        first = self.next_answer - now - self.late_s
        if self.next_answer and first <= nap:  # the pace known: end as the last answer due by then ends
            nap = first + (nap - first) // self.answer_every_s * self.answer_every_s
        return min(nap, NAP_MAX_S) if nap >= NAP_MIN_S else 0.0


def _smooth(old: float, new: float) -> float:
    return new if not old else old + SMOOTHING * (new - old)
