"""Marlin-family host protocol as a sans-I/O state machine.

Bytes in (`receive_data`), bytes out (`data_to_send`), events out (`events`); time only as the `now`
the caller passes. Covers numbered and checksummed lines, resends with Marlin's RX flush, the ok-window,
busy/wait, M115 capabilities, ADVANCED_OK, temperatures, M114, host actions and reset detection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from . import events as ev
from ._framing import frame_moves
from .framing import command_word, frame, plain
from .marlin_lines import (
    ADVANCED_OK_RE,
    BREAK_WAITS,
    CAP_RE,
    CORRUPT_MARKERS,
    ESTOP,
    FAULT_MARKERS,
    LINE_ERROR_MARKERS,
    PLAIN_OK_RE,
    POS_RE,
    RESEND_RE,
    TEMP_RE,
    UNKNOWN_RE,
    UNNUMBERED_OK_RE,
    fault_code,
    position,
    squeeze,
)
from .profile import Profile
from .window import History, SentLine, Window

HISTORY = 512
RESEND_SETTLE_S = 0.1  # a resent line that drew a repeated request and then silence is sent again
USER_WAITS = ("paused for user", "paused for input")  # Marlin's keepalive while a person is awaited
CONTINUE = b"M108\n"
BANNER_QUIET_S = 0.25  # after `start`, answers to lines written before it may still come: ignored
RESEND_ANSWER_S = 1.0  # a resent line with no answer at all this long is sent again (it was lost)
RESEND_RETRIES = 2  # copies sent again on a timer per request; after that the ok-watchdog takes over
EXPRESS_WORDS = frozenset({"G0", "G1", "G2", "G3"})  # what the compiled exchange carries (_framing.c)
ExpressOk = tuple[int, int, int, int]  # an ok the compiled exchange read: n, p, b, its lines sent before it


@dataclass(frozen=True, slots=True)
class ExpressBatch:
    """Job lines framed for the compiled exchange (machine/_express.c), numbered from `next_seq`, and
    the window as it stands: lines [oldest, next_seq) owe an ok, [win_start, next_seq) of `sizes`
    bytes may still be in the RX ring."""

    texts: list[str]
    tags: list[object]
    wires: list[bytes]
    oldest: int
    win_start: int
    next_seq: int
    sizes: list[int]
    limit: int
    depth: int
    queued: int  # the first lines come from the core's job queue (sent before, not yet written)


class MarlinProtocol:
    """One connection to a Marlin-family firmware (Marlin 1/2, Prusa, RepRapFirmware, Smoothieware)."""

    STOP_BYTES = ESTOP  # written out of band from any thread by an e-stop; `emergency_stop()` catches up

    def __init__(self, profile: Profile, now: float) -> None:
        self.profile = profile
        link = profile.link
        self.numbered = link.line_numbers
        self.window = Window(profile.window_bytes, pingpong=link.flow == "pingpong")
        self.long_commands = frozenset(c.upper() for c in profile.timeouts.long_commands)
        self._long_moves = bool(self.long_commands & EXPRESS_WORDS)  # a profile that waits long on a move
        self.capabilities: dict[str, bool] = dict(profile.capabilities)
        self._reserve_for_estop()
        self.firmware_name = ""
        self._job_active = False
        self.resends = 0
        self.errors = 0
        self.lines_heard = 0  # every line the firmware wrote: a connect retry is for a silent one only
        self.planner_free: int | None = None
        self.queue_free: int | None = None
        self._next_seq = 1
        self._history = History(HISTORY)
        self._host: deque[tuple[str, object]] = deque()
        self._job: deque[tuple[str, object]] = deque()
        self._resend: deque[SentLine] = deque()
        self._received: deque[SentLine] = deque()
        self._rx = bytearray()
        self._events: list[ev.Event] = []
        self._swallow_ok = False
        self._fragment = ""  # an unknown command that was not the line we wait on: its ok is not ours
        self._rewind: int | None = None
        self._wait_since = now
        self._probes = 0
        self._faulted = False
        self._info_pending = False
        self._quiet_until = 0.0
        self._settle_at = 0.0  # when the resent line, still unanswered, is taken for lost
        self._timed_resends = 0
        self._damaged = False  # the last line error was a damaged line, not one out of order
        self._now = now
        self._sync: SentLine | None = None  # an M110 on its way: nothing else goes out until its ok
        self._acked_seq = 0  # highest line number counted as acknowledged since the last M110
        self._barrier_from = 0  # M105s below this (sent before the last probe, not since) answer nothing sure
        # below, lines named by seq, which never repeats on a core: nothing to reset at a handshake or M110
        self._busy_at = (-1, 0.0)  # the line (seq) the firmware last said `busy:` for, and when
        self._heard = -1  # a long line whose keepalives come within ok_s of each other: silence is news
        self._nudged = -1  # the long command (seq) an M105 was sent behind
        self._waiting_on = -1  # the line (seq) already reported as waiting for a person
        self._prompt: tuple[str, list[str]] | None = None  # a host prompt being announced
        self._framed: tuple[int, str, bytes] | None = None  # the head line, framed while it waits

    # ---- what the driver feeds in -------------------------------------------------------------
    def begin_job(self) -> None:
        """A job is streaming: a reset from now on loses it (FirmwareReset with mid_job)."""
        self._job_active = True

    def end_job(self) -> None:
        self._job_active = False

    @property
    def job_active(self) -> bool:
        return self._job_active

    def send(self, command: str, tag: object = None, *, host: bool = False) -> None:
        """Queue one command; host commands (probes, scripts) go ahead of job lines."""
        (self._host if host else self._job).append((command.strip(), tag))

    def wants_lines(self) -> bool:
        """True when the job queue is low enough that the driver should read more of the file."""
        return len(self._job) < 4 and not self._faulted

    def handshake(self, now: float) -> None:
        """Reset line numbering and ask for capabilities; run at connect and after a reset."""
        self._history.clear()
        self._resend.clear()
        self._host.clear()  # what was queued for the firmware before (its earlier hello) is moot now
        self.window.clear()
        self._received.clear()
        self._rewind = None
        self._sync = None
        if self.numbered:
            self._host.append(("M110 N0", None))
        self._host.append(("M115", None))

    def discard_job(self) -> int:
        """Forget job lines not yet numbered (cancel); returns how many were dropped.

        Lines already numbered stay: Marlin accepts line numbers only in sequence, so a gap would make
        it ask for the missing lines anyway. They are at most a window's worth.
        """
        n = len(self._job)
        self._job.clear()
        return n

    def emergency_stop(self) -> bytes:
        """Bytes for an out-of-band M112; the job is dropped. With EMERGENCY_PARSER it acts on arrival."""
        self.discard_job()
        self._host.clear()
        self._resend.clear()
        return ESTOP

    def break_waits(self) -> bytes:
        """Bytes that end the heating waits and planned moves a firmware left mid-job is stuck in."""
        return BREAK_WAITS

    def continue_bytes(self) -> bytes:
        """M108 out of band: ends a wait for the user (M0/M1, M600's prompts). Only the emergency parser
        reads it while the command queue is blocked; without one the printer's own button must."""
        return CONTINUE if self.has_emergency_parser else b""

    @property
    def has_emergency_parser(self) -> bool:
        return self.capabilities.get("EMERGENCY_PARSER", False)

    def _reserve_for_estop(self) -> None:
        """Without an emergency parser, M112 must land in the RX ring: keep room for it there."""
        full = self.profile.window_bytes
        self.window.limit = full if self.has_emergency_parser else full - len(ESTOP)

    # ---- bytes out ----------------------------------------------------------------------------
    def data_to_send(self, now: float) -> bytes:
        """Frame as many queued lines as the window allows (resends first, then host, then job).

        A line gets its number only when it goes out, so nothing numbered ever waits behind a probe.
        """
        if self._faulted or now < self._quiet_until:
            return b""
        out = bytearray()
        while self._sync is None or self._resend:
            if self._rewind is not None and self.window.lines:
                break  # recovering from a resend: one line at a time until it is answered
            if self._resend:
                line = self._resend[0]
                if not self.window.fits(len(line.wire)):
                    break
                self._resend.popleft()
            else:
                src = self._host if self._host else self._job
                if not src:
                    break
                text, tag = src[0]
                word = command_word(text)
                renumber = self.numbered and word == "M110"
                if renumber and self.outstanding:
                    break  # M110 goes alone: Marlin renumbers when it runs it, not when it reads it
                seq = _m110_target(text) if renumber else self._next_seq
                wire = self._wire(seq, text)
                if not self.window.fits(len(wire)):
                    break
                src.popleft()
                line = self._commit(seq, text, wire, tag, word)
                if renumber:
                    self._sync = line
            if not self.outstanding:
                self._wait_since = now
            if self._rewind is not None:
                self._settle_at = now + RESEND_ANSWER_S
            self.window.push(line)
            out += line.wire
        return bytes(out)

    def _wire(self, seq: int, text: str) -> bytes:
        """The line as it goes out; kept while it waits for room, so a full window frames it once."""
        if self._framed is not None and self._framed[0] == seq and self._framed[1] is text:
            return self._framed[2]
        wire = frame(seq, text) if self.numbered else plain(text)
        self._framed = (seq, text, wire)
        return wire

    def _commit(self, seq: int, text: str, wire: bytes, tag: object, word: str) -> SentLine:
        if word == "M110" and self.numbered:
            self._history.clear()
            self._acked_seq = seq - 1
            self._barrier_from = 0
        self._next_seq = seq + 1
        line = SentLine(seq, text, wire, tag, long=word in self.long_commands, barrier=word == "M105")
        self._history.append(line)
        return line

    @property
    def outstanding(self) -> int:
        """Lines sent whose ok has not been seen (in the RX ring, or received and queued)."""
        return len(self._received) + len(self.window.lines)

    # ---- the compiled exchange ------------------------------------------------------------------
    def express_lines(self, pending: Iterable[tuple[Any, ...]], now: float) -> ExpressBatch | None:
        """The leading plain moves of `pending` (tuples text, tag, ...), framed for the compiled
        exchange, when the stream is in its steady state; None leaves the turn to the Python path
        (anything to resend, a host line, a half-read answer, a renumbering, the capabilities not yet
        known...). Framed in one call (_framing.c, what `frame` writes, for the lines EXPRESS_WORDS names)."""
        if not self._steady(now):
            return None
        queued = len(self._job)  # job lines sent before (the Python path's turn): theirs go first
        wires, texts, tags = frame_moves(self._next_seq, chain(self._job, pending) if queued else pending)
        if not wires:
            return None
        win, first = self.window.lines, self.oldest_unanswered()
        oldest = first.seq if first is not None else self._next_seq
        return ExpressBatch(
            texts, tags, wires, oldest, self._next_seq - len(win), self._next_seq,
            [len(x.wire) for x in win], self.window.limit, self.profile.link.queue_depth,
            min(queued, len(wires)),
        )  # fmt: skip

    def _steady(self, now: float) -> bool:
        """Nothing but job lines and their plain oks can happen next; the lines owed an ok are
        consecutive (what the compiled exchange's reckoning of the window assumes)."""
        if not (self.numbered and self.capabilities.get("ADVANCED_OK") and not self.window.pingpong):
            return False
        if self._faulted or self._resend or self._host or self._rx or self._info_pending:
            return False
        if self._sync is not None or self._rewind is not None or self._swallow_ok or self._fragment:
            return False
        owed, first = self.outstanding, self.oldest_unanswered()
        consecutive = first is None or first.seq + owed == self._next_seq
        return now >= self._quiet_until and consecutive

    def express_done(
        self,
        batch: ExpressBatch,
        sent: int,
        oks: Sequence[ExpressOk],
        now: float,
        *,
        answered: int,
        received: int,
    ) -> None:
        """Take what the compiled exchange did: its first `sent` lines went out in order, and each ok
        (n, p, b, lines out before it) came between them, leaving every line through `answered` done
        and every line through `received` out of the RX ring (-1: none), as `_on_advanced_ok` would
        have left them one by one. The state is the one `data_to_send` and `receive_data` would have
        left, taken at once; the lines answered are said by one LinesAcked, the LineAcked of each."""
        first = batch.next_seq
        if first != self._next_seq:
            raise ValueError(f"express batch numbered from {first}, the core is at {self._next_seq}")
        if answered >= first + sent:
            raise ValueError(f"express ok N{answered} came before its line was out")
        done = 0  # the burst's first lines, answered within it: retired from its lists, never SentLines
        if sent:
            if not self.outstanding:
                self._wait_since = now
            self._next_seq = first + sent
            for _ in range(min(sent, batch.queued)):
                self._job.popleft()
            if self._long_moves:  # a move that may take long is marked (the watchdog waits for it)
                lines = self._sent_lines(batch, 0, sent)
                for line in lines:
                    line.long = command_word(line.text) in self.long_commands
                self._history.extend(lines)
            else:
                done = min(sent, max(0, answered - first + 1))
                lines = self._sent_lines(batch, done, sent)
                self._history.extend_burst(first, batch.texts, batch.wires, batch.tags, sent)
            self.window.extend(lines)
        if not oks:
            return
        _, p, b, _ = oks[-1]
        self.planner_free, self.queue_free = p, b
        self.lines_heard += len(oks)
        self._wait_since, self._probes = now, 0
        self._express_retire(answered, batch, done)
        self._mark_received(received)

    @staticmethod
    def _sent_lines(batch: ExpressBatch, start: int, stop: int) -> list[SentLine]:
        """The burst's lines `start` to `stop` as the window holds them."""
        first, texts, wires, tags = batch.next_seq, batch.texts, batch.wires, batch.tags
        return [SentLine(first + i, texts[i], wires[i], tags[i]) for i in range(start, stop)]

    def _express_retire(self, answered: int, batch: ExpressBatch, done: int) -> None:
        """Lines through `answered` are done. Those sent before the burst (a host line among them, an
        M155 or a poll) are said one by one, as the Python path says them; the burst's first `done`, all
        job lines, in one LinesAcked."""
        while (oldest := self.oldest_unanswered()) is not None and oldest.seq <= answered:
            self._retire_oldest()
        if done:
            self._acked_seq = batch.next_seq + done - 1
            self._emit(ev.LinesAcked(batch.next_seq, tuple(batch.texts[:done]), tuple(batch.tags[:done]),
                                     tuple(map(len, batch.wires[:done]))))  # fmt: skip

    # ---- bytes in -----------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the port; complete lines become events."""
        if not data:
            return
        self._now = now
        self._rx += data
        while True:
            nl = self._rx.find(b"\n")
            if nl < 0:
                if len(self._rx) > 4096:  # a firmware that never ends its line: keep the tail only
                    del self._rx[:-256]
                return
            raw = bytes(self._rx[:nl])
            del self._rx[: nl + 1]
            if raw[:4] == b"ok N" and self._plain_ok(raw, now):
                continue
            line = raw.decode("utf-8", "replace").strip("\r\x00 ")
            self.lines_heard += bool(line)
            if line and self._handle(line):
                self._wait_since = now  # only an answer is progress: autoreports and echoes are not
                self._probes = 0

    def events(self) -> list[ev.Event]:
        """Take the events produced so far."""
        out, self._events = self._events, []
        return out

    def _emit(self, event: ev.Event) -> None:
        self._events.append(event)

    def _handle(self, line: str) -> bool:
        """Act on one line; True when it answers our commands (progress for the ok-watchdog)."""
        low = line.lower()
        if self._now < self._quiet_until and (low.startswith(("ok", "error")) or RESEND_RE.match(line)):
            return True  # an answer to a line written before the reset: to none of ours
        swallow, self._swallow_ok = self._swallow_ok, False
        fragment, self._fragment = self._fragment, ""
        if low.startswith("ok"):
            numbered_ok = self.numbered and ADVANCED_OK_RE.search(line)
            if fragment and numbered_ok:
                self._on_damaged_ok(int(numbered_ok.group(1)), fragment)
            if not swallow and (numbered_ok or not fragment):
                self._on_ok(line)
            elif fragment and not numbered_ok and self._ran_unnumbered(fragment):
                self._probe(self._now)  # nothing more will come: ask where Marlin is now, not in ok_s
        elif m := RESEND_RE.match(line):
            self._on_resend(int(m.group(1)))
        elif low.startswith("error") or low.startswith("!!"):
            self._on_error(line)
        elif "busy:" in low:
            self._on_busy(line.split("busy:", 1)[-1].strip())
        elif low == "start" or low.startswith("start "):
            self._on_reset(line)
        elif line.startswith("FIRMWARE_NAME:"):
            self.firmware_name = line[len("FIRMWARE_NAME:") :].split(" SOURCE_CODE_URL")[0].strip()
            self._info_pending = True
        elif m := CAP_RE.match(line):
            self.capabilities[m.group(1)] = m.group(2) == "1"
            self._info_pending = True
        elif " count " in low and POS_RE.search(line):
            self._emit(ev.Position(position(line)))
        else:
            self._on_unsolicited(line, low)
            return False
        return True

    def _on_busy(self, text: str) -> None:
        """`busy: paused for user` (M0/M1, M600 …) is a person awaited, once per waiting line; any other
        busy is progress."""
        self._emit(ev.Busy(text))
        oldest = self.oldest_unanswered()
        if oldest is not None:
            seq, at = self._busy_at
            if seq == oldest.seq and self._now - at < self.profile.timeouts.ok_s:
                self._heard = seq  # two keepalives closer than ok_s (M113 may space them wider)
            self._busy_at = (oldest.seq, self._now)
        if text.lower() in USER_WAITS and oldest is not None and oldest.seq != self._waiting_on:
            self._waiting_on = oldest.seq
            self._emit(ev.UserWait(oldest.text, oldest.tag))

    def _on_unsolicited(self, line: str, low: str) -> None:
        """Lines the firmware prints on its own: they say nothing about our commands' progress."""
        if low == "wait":
            if self.outstanding:
                self._probe(self._wait_since)
        elif low.startswith("//action:"):
            name, _, args = line[len("//action:") :].partition(" ")
            self._emit(ev.ActionCommand(name.strip(), args.strip()))
            self._host_prompt(name.strip().lower(), args.strip())
        elif "unknown command" in low:
            self._on_unknown(line)
        elif TEMP_RE.search(line) and ("T:" in line or "B:" in line):
            self._emit_temps(line)
        else:
            self._emit(ev.Message(line))

    def _host_prompt(self, name: str, args: str) -> None:
        """prompt_begin (words), prompt_choice / prompt_button (buttons), prompt_show: one HostPrompt."""
        if name == "prompt_begin":
            self._prompt = (args, [])
        elif name in ("prompt_choice", "prompt_button") and self._prompt is not None:
            self._prompt[1].append(args)
        elif name == "prompt_show" and self._prompt is not None:
            self._emit(ev.HostPrompt(self._prompt[0], tuple(self._prompt[1])))
        elif name == "prompt_end":
            self._prompt = None

    def _plain_ok(self, raw: bytes, now: float) -> bool:
        """The answer to nearly every streamed line, `ok N<n> P<p> B<b>`, taken without the general
        reading of a line (decoding, lower-casing, the patterns tried in turn): the same acts, a
        fraction of the cost per line. False when the line needs the general reading."""
        if not self.numbered or self._swallow_ok or self._fragment or now < self._quiet_until:
            return False
        m = PLAIN_OK_RE.fullmatch(raw)
        if m is None:
            return False
        self.lines_heard += 1
        self._after_ok(self._on_advanced_ok(int(m[1]), int(m[2]), int(m[3])))
        self._wait_since, self._probes = now, 0
        return True

    def _on_ok(self, line: str) -> None:
        if m := UNNUMBERED_OK_RE.match(line):
            self.planner_free, self.queue_free = int(m.group(1)), int(m.group(2))
            if self.numbered:
                return  # a line without N reached the parser: a cut or corrupted one, never ours
        if "T:" in line:
            self._emit_temps(line)
            retired = self._retire_through_barrier()
        elif self.numbered and (m := ADVANCED_OK_RE.search(line)):
            retired = self._on_advanced_ok(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        else:
            retired = self._retire_oldest()
        self._after_ok(retired)

    def _after_ok(self, retired: SentLine | None) -> None:
        """The M115 answered: what it said is complete."""
        if self._info_pending and retired is not None and command_word(retired.text) == "M115":
            self._info_pending = False
            self._reserve_for_estop()
            self._emit(ev.FirmwareInfo(self.firmware_name, dict(self.capabilities)))

    def _retire_oldest(self) -> SentLine | None:
        """An ok answers the oldest line still waiting for one."""
        line = self._received.popleft() if self._received else self.window.pop_oldest()
        if line is not None:
            self._acked(line)
        return line

    def _retire_through_barrier(self) -> SentLine | None:
        """An `ok T:` answers an M105: every line sent before it has been answered too. After a probe it
        answers the probe: an older M105 still waiting lost its answer (else the silence would not have
        been), and taking this one for it would leave each later probe waiting on the next answer."""
        if not any(self._is_barrier(x) for x in (*self._received, *self.window.lines)):
            return self._retire_oldest()
        while (line := self._retire_oldest()) is not None:
            if self._is_barrier(line):
                return line
        return None

    def _is_barrier(self, line: SentLine) -> bool:
        return line.barrier and line.seq >= self._barrier_from

    def _acked(self, line: SentLine) -> None:
        if self._sync is line:
            self._sync = None
        if self._rewind is not None and line.seq >= self._rewind:
            self._rewind, self._settle_at = None, 0.0
        if self.numbered:
            if line.seq <= self._acked_seq:
                return  # counted already: an ok that answered something else was taken for it
            self._acked_seq = line.seq
        self._emit(ev.LineAcked(line.seq, line.text, line.tag, len(line.wire)))

    def oldest_unanswered(self) -> SentLine | None:
        """The line the firmware is working on (or will read next): the first with no ok yet."""
        return self._received[0] if self._received else self.window.oldest()

    def _mark_received(self, through: int) -> None:
        """Lines up to `through` have left the RX ring: they no longer count against the window."""
        while (oldest := self.window.oldest()) is not None and oldest.seq <= through:
            self.window.pop_oldest()
            self._received.append(oldest)

    def _on_advanced_ok(self, answered: int, planner_free: int, queue_free: int) -> SentLine | None:
        """ADVANCED_OK names the line it answers: it and every line before it are done (their oks were
        lost if we still wait on them). The queue it reports holds that line and the ones read after it."""
        self.planner_free, self.queue_free = planner_free, queue_free
        self.capabilities.setdefault("ADVANCED_OK", True)
        if answered >= self._next_seq:
            return None  # a number we have not used since our M110: a line from before it (a reconnect)
        retired = None
        while (oldest := self.oldest_unanswered()) is not None and oldest.seq <= answered:
            retired = self._retire_oldest()
        if self._rewind is None:  # while recovering, what follows the resent line is unknown
            self._mark_received(answered + self.profile.link.queue_depth - queue_free - 1)
        return retired

    def _on_resend(self, seq: int) -> None:
        """Marlin flushes its RX ring on a bad line and asks once; lines that reach it after the flush ask
        again. A repeat before we have sent the line again is such an echo. Once the copy is out, a
        repeat after a damaged line means the copy failed: sent again at once; after an out-of-order
        line it may be an echo: sent again only if silence follows (never a stall, rarely a duplicate)."""
        self._swallow_ok = self.profile.link.ok_after_resend
        if self._sync is not None:
            self._resend_sync()
            return
        damaged, self._damaged = self._damaged, False
        if self._rewind == seq:
            if self._copy_waiting():
                self._emit(ev.ResendRequested(seq, stale=True))  # asked again before we could answer
                return
            if not damaged:
                # out of order: an echo from a line that reached Marlin after its flush, or our copy;
                # if silence follows, it was our copy
                self._settle_at = self._now + RESEND_SETTLE_S
                self._emit(ev.ResendRequested(seq, stale=True))
                return
        if not self._history:
            return
        first = self._history.first_seq()
        if not first <= seq <= self._next_seq:
            self._fault(
                f"the firmware asked to resend line {seq}, which is no longer held "
                f"(held: {first}..{self._next_seq - 1})",
                "resend-unavailable",
            )
            return
        self._rewind_to(seq)
        self._timed_resends = 0
        self.resends += 1
        self._emit(ev.ResendRequested(seq))

    def _copy_waiting(self) -> bool:
        """The line asked for has not gone out again yet."""
        return bool(self._resend) and self._resend[0].seq == self._rewind

    def _rewind_to(self, seq: int) -> None:
        """Everything before `seq` was read; everything from it on is gone from the firmware. Until the
        resent line is answered it goes alone: bytes that reached the ring after Marlin's flush may still
        be there, and one line never overflows what the lost line used to occupy."""
        self._received = deque(x for x in self._received if x.seq < seq)
        self.window.drop_from(seq)
        self._mark_received(seq - 1)
        self._rewind, self._settle_at = seq, 0.0
        self._resend = deque(self._history.since(seq))
        self._barrier_from = min(self._barrier_from, seq)  # each copy goes after the probe, answered in turn

    def _resend_sync(self) -> None:
        """The M110 did not take (corrupted on the way): Marlin counts the old numbers still. Again."""
        sync = self._sync
        assert sync is not None
        self.window.clear()
        self._received.clear()
        self._resend = deque([sync])
        self.resends += 1
        self._emit(ev.ResendRequested(sync.seq))

    def _on_error(self, line: str) -> None:
        low = line.lower()
        self.errors += 1
        if any(m in low for m in LINE_ERROR_MARKERS):
            self._damaged = any(m in low for m in CORRUPT_MARKERS)
            return  # a Resend follows; nothing to do until it comes
        if "unknown command" in low:
            self._on_unknown(line)
            return
        if low.startswith("!!") or any(m in low for m in FAULT_MARKERS):
            self._fault(line.split(":", 1)[-1].strip() or line, fault_code(low))
            return
        self._emit(ev.FirmwareWarning(line))

    def _on_unknown(self, line: str) -> None:
        """An unknown command is a warning, unless it is not the line we wait on.

        Then it is a fragment (a line cut by an RX flush, or one whose `N` was corrupted so Marlin read it
        as an unnumbered command): its `ok` answers none of our lines, so that ok is eaten.
        """
        m = UNKNOWN_RE.search(line)
        text = (m.group(1) if m else "").strip()
        oldest = self.oldest_unanswered()
        if oldest is None or squeeze(text) != squeeze(oldest.text):
            self._fragment = text or line
            if self._rewind is not None:  # perhaps our resent copy, its N corrupted
                self._settle_at = self._now + RESEND_SETTLE_S
            return
        self._emit(ev.FirmwareWarning(line, oldest.seq if oldest else None))

    def _ran_unnumbered(self, fragment: str) -> bool:
        """The newest line we wrote reached Marlin with its N damaged (read as an unknown command: it ran
        nothing), so Marlin has read all we sent and no later line will make it ask for that one: the
        ok-watchdog would wait out its whole timeout (5 s a time in a pingpong stream with 1 % of lines
        corrupted, again when the probe itself is damaged)."""
        if self.oldest_unanswered() is None or not self._history or self._rewind is not None:
            return False
        return squeeze(fragment).endswith(squeeze(self._history.last_text()))

    def _on_damaged_ok(self, seq: int, ran: str) -> None:
        """Our line N was damaged on the wire in a way its XOR checksum missed (two flips of one bit):
        Marlin accepted it and ran something else. Said loudly; the line counts as done, as Marlin says."""
        line = next((x for x in (*self._received, *self.window.lines) if x.seq == seq), None)
        if line is not None:
            self._emit(
                ev.FirmwareWarning(
                    f"line {seq} reached the firmware damaged and passed its checksum: it ran {ran!r} "
                    f"instead of {line.text!r}",
                    seq,
                    line.tag,
                )
            )

    def _on_reset(self, banner: str) -> None:
        mid_job = self._job_active  # outside a job a reset only loses the handshake: it is redone
        self._emit(ev.FirmwareReset(banner, mid_job))
        if mid_job:
            self._fault(
                "the printer restarted mid-job (power glitch, watchdog or reset); it lost its plan",
                "firmware-reset",
            )
        self.handshake(self._now)
        self._quiet_until = self._now + BANNER_QUIET_S

    def _emit_temps(self, line: str) -> None:
        heaters = {}
        for name, actual, target in TEMP_RE.findall(line):
            heaters[name] = (float(actual), float(target) if target else 0.0)
        if heaters:
            self._emit(ev.Temperatures(heaters))

    def _fault(self, reason: str, code: str) -> None:
        if not self._faulted:
            self._faulted = True
            self._emit(ev.Fault(reason, code))

    # ---- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Run the ok-watchdog: silence with lines outstanding gets a probe, then a fault."""
        self._now = now
        settled = self._settle_at and now >= self._settle_at and self._timed_resends < RESEND_RETRIES
        if settled and self._rewind is not None and not self._copy_waiting():
            self._timed_resends += 1
            self._rewind_to(self._rewind)  # the resent copy was lost, flushed or failed: send it again
        if self._faulted or not self.outstanding:
            return
        ok_s = self.profile.timeouts.ok_s
        long_wait = self._waiting_long()
        if long_wait and now - self._wait_since >= ok_s:
            self._nudge()
        limit = self.profile.timeouts.long_command_s if long_wait else ok_s
        if now - self._wait_since < limit:
            return
        if self._probes >= self.profile.timeouts.probes:
            self._fault(
                f"no answer from the firmware after {self._probes} probes {limit:g} s apart", "no-answer"
            )
            return
        self._probe(now)

    def _waiting_long(self) -> bool:
        """The oldest line still owed an ok legitimately takes long (G28, M109...) and has not been heard
        to run: once its keepalives came within ok_s (Marlin's `busy:`, every 2 s), silence is news. Per
        line, since a build may keep quiet during some (no BUSY_WHILE_HEATING: M109 says nothing)."""
        oldest = self.oldest_unanswered()
        return oldest is not None and oldest.long and oldest.seq != self._heard

    def _nudge(self) -> None:
        """A long command silent for ok_s, never heard to run: it runs quietly, or the firmware never took
        it (real Marlin 2.1 drops without a word a line numbered like the one it took last). One M105
        behind it tells: answered when the command ends, or its number draws the Resend of the lost line.
        The long line has left the RX ring either way; nothing else is assumed."""
        oldest = self.oldest_unanswered()
        if oldest is None or oldest.seq == self._nudged:
            return
        self._nudged = oldest.seq
        self._mark_received(oldest.seq)
        self._host.appendleft(("M105", None))

    def _probe(self, now: float) -> None:
        """After silence, the firmware has read all it ever will: send a numbered M105 next.

        Its `ok T:` answers every line sent before it; a Resend instead says where the firmware is.
        """
        self._probes += 1
        self._barrier_from = self._next_seq  # the probe's number: resends go first, numbered below it
        self._rewind = None
        self._sync = None  # an M110 whose ok was lost must not hold the probe back
        self._mark_received(self._next_seq)
        self._host.appendleft(("M105", None))
        self._wait_since = now
        self._emit(ev.ProbeSent(self._probes))

    def urgent_data(self) -> bytes:
        """Marlin has no bytes that skip the window; M112 goes out through the machine's urgent path."""
        return b""


def _m110_target(text: str) -> int:
    parts = text.upper().split()
    for p in parts[1:]:
        if p.startswith("N") and p[1:].isdigit():
            return int(p[1:])
    return 0
