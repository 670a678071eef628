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
it has. The time kept in hand grows with how late the thread's wake-ups have lately been.
"""

from __future__ import annotations

NAP_MIN_S = 0.0005  # a shorter nap costs a wake-up and saves nothing
NAP_MAX_S = 0.010  # the longest any answer waits for the machine thread while a job streams
SLACK_S = 0.0005  # kept in hand at least: the turn's own work, the answer's way back
LATE_WEIGHT = 3.0  # kept in hand besides: this many times the recent lateness of a wake-up
SMOOTHING = 0.25  # weight of the newest turn in the measured figures


class Pacer:
    """The wire's model and the naps it allows; owned by the machine thread."""

    def __init__(self, baud: int) -> None:
        self.wire_s = 10.0 / max(baud, 1200)  # a byte's time on the wire: 8N1, start and stop bits
        self.per_byte_s = 0.0  # measured: time between turns over the bytes of the lines they saw answered
        self.late_s = 0.0  # how much later than asked the thread's naps have lately ended
        self.busy_until = 0.0  # when the bytes written so far are through, by the model
        self._since: float | None = None  # when the last turn that saw answers ended

    def wrote(self, nbytes: int, now: float) -> None:
        """Bytes went out: they cross the wire after the ones before them."""
        byte_s = min(self.wire_s, self.per_byte_s) if self.per_byte_s else self.wire_s
        self.busy_until = max(now, self.busy_until) + nbytes * byte_s

    def answered(self, nbytes: int, now: float) -> None:
        """A turn saw job lines of `nbytes` wire bytes answered (0: none this turn)."""
        if not nbytes:
            return
        if self._since is not None:
            self.per_byte_s = _smooth(self.per_byte_s, (now - self._since) / nbytes)
        self._since = now

    def woke(self, asked: float, took: float) -> None:
        """A turn's nap of `asked` seconds (0: it watched the port) ended after `took`. A wake-up by a
        command is not lateness; a turn without a nap lets an old lateness fade, so naps are tried
        again once a busy spell is over."""
        if not asked:
            self.late_s *= 1.0 - SMOOTHING
        elif took >= asked:
            self.late_s = _smooth(self.late_s, took - asked)

    def reset(self) -> None:
        """A job starts, resumes or waits: its earlier pace says nothing of what comes next."""
        self.per_byte_s = 0.0
        self._since = None

    def nap_s(self, now: float) -> float:
        """How long the thread may sleep before reading; 0 to watch the port instead."""
        nap = self.busy_until - now - SLACK_S - LATE_WEIGHT * self.late_s
        return min(nap, NAP_MAX_S) if nap >= NAP_MIN_S else 0.0


def _smooth(old: float, new: float) -> float:
    return new if not old else old + SMOOTHING * (new - old)
