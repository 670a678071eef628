"""The machine thread's loop: it owns the port's reading side, the protocol driver and the running job.

`Machine` (worker.py) is the handle other threads hold: they post commands here through `post` and a
wake-up pipe, and read what this loop publishes on the handle (its state, temperatures, position, the
last job's result), each value replaced, never changed in place. Events go out on a queue this loop
never blocks on. What differs between firmware families is the driver's (drivers.py).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..firmware import events as ev
from ..firmware.framing import command_word
from ..gcode.analyzer import analyzer_for
from . import events as me
from .console import ConsoleAction, ConsoleRunner
from .drivers import END_MARK, Driver, driver_for
from .events import JOB_STATES, STOPPED_STATES, JobResult, MachineEvent, MachineState
from .heat import HeatWatch
from .job import JobError, JobFile, JobPos
from .link import LinkLost
from .pacing import Pacer
from .streaming import Counters, StreamingJob

if TYPE_CHECKING:
    from .worker import Machine

CANCEL_HOLD_S = 5.0  # longest a GRBL feed hold may take to stop before cancel resets anyway
TELEMETRY_EVERY_S = 0.5
PROGRESS_EVERY_S = 1.0  # a running job reports what it has used this often (the ledger checkpoints it)
CLOSE_DRAIN_S = 2.0  # closed mid-job: how long to wait for the answers to lines already sent
HEAT_WAITS = frozenset({"M109", "M190", "M191", "M116"})  # hold the queue until a heater is at temperature
PROMPTS = frozenset({"M0", "M00", "M1", "M01", "M600"})  # job lines that may wait for a person
EXPRESS_LINES = 128  # job lines handed to one burst of the compiled exchange (~0.2 s at 250000 baud)
EXPRESS_TURN_S = 0.5  # longest burst: watchdog and progress come between (a command ends it at once)


class _Reconnect(Exception):
    """Raised inside the machine thread to start the connection over."""


class MachineLoop:
    """Everything the machine thread owns; only `post`, `safe_state`, the events and the flags below are
    touched from other threads."""

    def __init__(self, machine: Machine, stop_on_grbl_error: bool, reconnect_s: float) -> None:
        self.m = machine
        self.profile = machine.profile
        self.link = machine.link
        self.link.sleep_for_rest = machine.profile.link.flow != "pingpong"  # see SerialLink.sleep_for_rest
        self.driver: Driver = driver_for(machine.profile, time.monotonic())
        self.stop_on_grbl_error = stop_on_grbl_error
        self.reconnect_s = reconnect_s
        self.job: StreamingJob | None = None
        self.cmds: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.safe_requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._safe_lock = threading.Lock()  # counts the requests of several asking threads
        self.safe_asked = 0  # requests put, counted before each is put (any thread, under the lock)
        self._safe_seen = 0  # requests taken off the queue (the machine thread)
        self.safe_done = 0  # requests seen when the last safe state's event was emitted (the machine thread)
        self.ready = threading.Event()  # connected and identified (or given up)
        self.job_done = threading.Event()
        self.closing = False
        self.closed = threading.Event()
        self._reset_by = 0.0
        self._after_reset: Callable[[], None] | None = None
        self._last_telemetry = 0.0
        self.safe_pending = ""  # a safe state asked for before the machine could take it
        self._stall_since = 0.0
        self.console = ConsoleRunner(self)
        self.heat = HeatWatch()
        self._heat_looked_at: tuple[object, bool] | None = None  # (head line, paused) _watch_heating read
        self.pacer = Pacer(self.link.baud)
        self._answered = 0  # wire bytes of the job lines answered this turn, for the pacer
        self._answered_lines = 0  # and how many they were
        self.express = True  # plain moves of a steady stream go by the compiled exchange (link.express)
        self.express_sent = 0  # job lines the compiled exchange has written since the thread started

    def post(self, *cmd: Any) -> None:
        """A command for the machine thread (any thread)."""
        self.cmds.put(cmd)
        self.link.wake()

    def safe_state(self, reason: str) -> None:
        """Any thread: the thread decides whether it can be taken now or once connected."""
        with self._safe_lock:
            self.safe_asked += 1
            self.safe_requests.put(reason)
        self.link.wake()

    def run(self) -> None:
        """Connect, stream, and when the port vanishes fail the job and try again until closed."""
        try:
            self._loop()
        finally:
            if (job := self.job) is not None:  # closed mid-job: the agent bills exactly what was answered
                self._emit(me.Progress, used=job.used())

    def _loop(self) -> None:
        while not self.closing:
            try:
                self._connect()
                while not self.closing:
                    self._step()
                self._answers_before_close()
            except _Reconnect:
                self.link.close()
                continue
            except LinkLost as exc:
                self._lost(str(exc))
            except Exception as exc:  # a bug must still end the job loudly, never leave a silent thread
                self._emit(me.Fault, reason=f"internal error: {exc!r}", code="internal")
                self._finish("failed", f"internal error: {exc!r}", "internal", MachineState.FAULT)
                self._set_state(MachineState.FAULT)
                self.ready.set()
                raise
            self.ready.set()
            if not self.reconnect_s:
                return
            self._drain_commands()
            self.closed.wait(self.reconnect_s)
            self.m.heartbeat = time.monotonic()

    def _connect(self) -> None:
        self.driver.new_core(time.monotonic())
        self.link.open()
        self._take_safe_requests(act=False)  # taken once the firmware has answered (FirmwareInfo)
        if self.safe_pending:
            self._break_waits()
        self._set_state(MachineState.CONNECTING)
        self.driver.core.handshake(time.monotonic())
        deadline = time.monotonic() + self.profile.link.open_delay_s + 10.0
        retry_at = time.monotonic() + self.profile.link.open_delay_s + 2.0
        heard = 0
        while not self.closing and self.m.state == MachineState.CONNECTING:
            now = self.m.heartbeat = time.monotonic()
            if now > deadline:
                raise LinkLost(f"{self.link.port_name}: no answer from a {self.profile.name} firmware")
            if now > retry_at:
                retry_at = now + 2.0
                # greet again only a silent firmware (it missed our hello while booting): one that
                # talks but answers slowly is waited for, not greeted twice (M115 run twice)
                if self.driver.core.lines_heard == heard:
                    self.driver.core.handshake(now)
                heard = self.driver.core.lines_heard
            self._io(now, 0.05)

    def _break_waits(self, bursts: int = 4, quiet_s: float = 0.5) -> None:
        """Before talking to a firmware left mid-job: it may sit in heating waits (M190, then M109...)
        that answer nothing. What it answers meanwhile is the old job's and is read and dropped."""
        data = self.driver.break_waits()
        for _ in range(bursts if data else 0):
            self.link.write(data)
            deadline = time.monotonic() + quiet_s
            while time.monotonic() < deadline and not self.closing:
                if b"ok" in self.link.wait(0.1):
                    deadline = time.monotonic() + quiet_s  # still draining: wait for it to go quiet

    def _step(self) -> None:
        self.m.heartbeat = now = time.monotonic()
        self._drain_commands()
        self._take_safe_requests(act=True)
        if not self._express(now):
            self._feed()
            self._io(now, 0.1, commands_first=True)
        now = time.monotonic()
        self.console.step(now)
        if self._reset_by:
            self._reset_when_stopped(now)
        if self._stall_since and now - self._stall_since > self.profile.timeouts.stall_grace_s:
            self._stalled_safe_state()
        if (job := self.job) is not None:
            self._watch_heating(job)
            if now - job.last_progress >= PROGRESS_EVERY_S:
                job.last_progress = now
                self._emit(me.Progress, used=job.used())

    def _answers_before_close(self) -> None:
        """Closed mid-job: feed nothing more, but read the answers to what the firmware already has (up
        to CLOSE_DRAIN_S), so the job is billed for every line it ran, not for the last progress report."""
        deadline = time.monotonic() + CLOSE_DRAIN_S
        while (
            self.job is not None
            and self.driver.core.oldest_unanswered() is not None
            and time.monotonic() < deadline
        ):
            self._io(time.monotonic(), 0.05)

    def _watch_heating(self, job: StreamingJob) -> None:
        """Heating while the oldest unanswered line is a heat-and-wait: the firmware holds there."""
        oldest = self.driver.core.oldest_unanswered()
        seen = self._heat_looked_at
        if seen is not None and seen[0] is oldest and seen[1] == job.paused:
            return  # the same line at the head as last turn: nothing to read again
        self._heat_looked_at = (oldest, job.paused)
        word = oldest.text.split(None, 1)[0].upper() if oldest and oldest.text else ""
        heating = word in HEAT_WAITS and not job.paused
        if heating != job.heating:
            job.heating = heating
            self.pacer.reset()  # a heating wait's pace is not the stream's
            self._emit(me.Heating, on=heating, command=oldest.text if heating and oldest else "")

    def _io(self, now: float, timeout: float, commands_first: bool = False) -> None:
        """Write what the core has, wait for bytes, hand them over. With `commands_first`, a command posted
        during the wait is taken before those bytes: an e-stop's bytes go out after its command is posted,
        so the firmware's answer to them (Marlin's `kill() called`) must not be read as a fault first."""
        core = self.driver.core
        out = core.urgent_data() + core.data_to_send(now)
        if out:
            self.link.write(out)
            self.pacer.wrote(len(out), now)
        job = self.job
        nap = self.pacer.nap_s(now) if commands_first and job is not None and not job.paused else 0.0
        data = self.link.wait(timeout, nap)
        if commands_first:
            self.pacer.woke(nap, self.link.napped_s)
            if not self.cmds.empty():
                self._drain_commands()
        now = time.monotonic()
        core.receive_data(data, now)
        self._after_reading(now)
        self.pacer.answered(self._answered, now, self._answered_lines, self.link.followed)

    def _after_reading(self, now: float) -> None:
        """The core's watchdog, then its events acted on (job lines answered are counted for the pacer)."""
        self.driver.core.tick(now)
        self._take_events(now)

    def _take_events(self, now: float) -> None:
        self._answered = self._answered_lines = 0
        for event in self.driver.core.events():
            self._on_event(event, now)

    def _express(self, now: float) -> bool:
        """One burst of the compiled exchange when the job streams plain moves and nothing else is going
        on: the lines' framing, the window and every event stay the Python core's, which replays what the
        burst did. False: the turn is the Python path's."""
        job = self.job
        if job is None or job.paused or job.ending or job.held_for_tool or job.heating or not self.express:
            return False
        if self._stall_since or self._reset_by or not self.cmds.empty() or not self.driver.has_express:
            return False
        self._read_ahead(job, EXPRESS_LINES)
        batch = self.driver.express_lines(job.ahead, now)
        if batch is None:
            return False
        done = self.link.express(batch, EXPRESS_TURN_S)
        now = time.monotonic()
        core = self.driver.core
        self.driver.express_done(batch, done, now)
        self.express_sent += done.sent
        for _ in range(done.sent - min(done.sent, batch.queued)):  # the core's queued lines went first
            job.ahead.popleft()
        self._take_events(now)  # the burst's answers, counted before any command: an e-stop bills them
        if not self.cmds.empty():  # as in _io: a command posted meanwhile comes before the bytes read
            self._drain_commands()
        core.receive_data(done.rest, now)
        self._after_reading(now)
        self.pacer.reset()  # the Python path's naps start from what is on the wire now
        self.pacer.wrote(core.window.bytes, now)
        if done.lost:
            raise LinkLost(done.lost)
        return True

    def _read_ahead(self, job: StreamingJob, n: int) -> None:
        """Read the file until `n` commands wait in `job.ahead`, or it ends, or a line is bad."""
        want = n - len(job.ahead)
        if want <= 0 or job.unreadable:
            return
        try:
            got = job.file.read_commands(want)
        except JobError as exc:
            job.unreadable = str(exc)
            return
        for text, pos, note in got:
            if text[:1] in "Mm" and command_word(text) in PROMPTS:
                job.notes[pos.line] = note
        job.ahead.extend(got)

    def _feed(self) -> None:
        job = self.job
        if job is None or job.paused or job.ending or job.held_for_tool:
            return
        core = self.driver.core
        while core.wants_lines():
            self._read_ahead(job, 1)
            if not job.ahead:
                if job.unreadable:
                    self._finish("failed", job.unreadable, "bad-file")
                else:
                    job.ending = "completed"
                    self.driver.send_end(job.check)
                return
            text, pos, note = job.ahead.popleft()
            if not job.check and (tool := self.console.tool_change(text)) is not None:
                job.held_for_tool = True
                self.console.hold_for_tool(tool, text, pos, note)
                return
            core.send(text, pos)

    def _drain_commands(self) -> None:
        if self.cmds.empty():  # the common case, every turn: no exception raised for it
            return
        while True:
            try:
                cmd = self.cmds.get_nowait()
            except queue.Empty:
                return
            getattr(self, "_cmd_" + cmd[0])(*cmd[1:])

    def _take_safe_requests(self, act: bool) -> None:
        """A safe state asked for by another thread: kept pending, and taken now if `act` and the
        machine can (connected and idle or in alarm)."""
        while not self.safe_requests.empty():
            self.safe_pending = self.safe_requests.get_nowait()
            self._safe_seen += 1
        if act and self.safe_pending and self.m.state in (MachineState.IDLE, MachineState.ALARM):
            self._safe_state_now(self.safe_pending)

    def _cmd_job(self, path: str, check: bool = False, density_g_cm3: float | None = None) -> None:
        if self.m.state != MachineState.IDLE:
            self._refuse(JobResult("failed", f"machine is {self.m.state}", "busy", file=path))
            return
        try:
            file = JobFile(path, parens=self.driver.parens, max_line=self.driver.line_limit)
        except JobError as exc:
            self._refuse(JobResult("failed", str(exc), "bad-file", file=path))
            return
        usage = analyzer_for(self.profile, path, path, density_g_cm3)  # fed as lines are acked
        job = StreamingJob(file, self._counters(), usage)
        job.check = self.driver.begin_job(check)
        self.job = job
        self.pacer.reset()
        self._set_state(MachineState.PRINTING)
        self._emit(me.JobStarted, file=path, size=file.size)

    def _counters(self) -> Counters:
        core = self.driver.core
        return Counters(time.monotonic(), self.link.bytes_written, core.resends, core.errors)

    def _refuse(self, result: JobResult) -> None:
        """A job that never started still ends, with a result saying why."""
        self.m.result = result
        self._emit(me.JobFinished, result=result)
        self.job_done.set()

    def _cmd_pause(self) -> None:
        if self.m.state != MachineState.PRINTING or self.job is None:
            return
        self.job.paused = True
        self.driver.pause()
        self._set_state(MachineState.PAUSED)

    def _cmd_resume(self) -> None:
        job = self.job
        if self.m.state != MachineState.PAUSED or job is None or self.m.grbl_state.startswith("Door:1"):
            return
        if now := self.driver.resume(job.modal_restore()):
            self.link.write(now)
        job.paused = False
        self.pacer.reset()
        self._set_state(MachineState.PRINTING, heating=job.heating)

    def _cmd_cancel(self, who: str) -> None:
        """Marlin: stop feeding, run the cancel script. GRBL: hold, reset once stopped, then the script."""
        job = self.job
        if job is None or job.ending:
            return
        job.ending, job.ending_who = "cancelled", who
        if self.m.state == MachineState.WAITING and (prompt := self.m.prompt) is not None and not prompt.host:
            self.link.write(self.driver.continue_bytes())  # Marlin reads nothing else while it waits
        job.held_for_tool = False
        if hold := self.driver.cancel():
            self.link.write(hold)
            self._reset_by = time.monotonic() + CANCEL_HOLD_S

    def _reset_when_stopped(self, now: float) -> None:
        """GRBL cancel: a reset once the hold has stopped the axes keeps the position (no ALARM:3)."""
        if self._reset_by and (self.driver.motion_stopped or now > self._reset_by):
            self._reset_by = 0.0
            self.link.write(self.driver.soft_reset())
            check = self.job is not None and self.job.check
            self._after_reset = lambda: self.driver.cancel_script(check)

    def _cmd_soft_reset(self) -> None:
        self._finish("failed", "the controller was reset by request", "reset", MachineState.RESETTING)
        self.link.write(self.driver.soft_reset())
        if self.m.state in (MachineState.IDLE, *JOB_STATES):
            self._set_state(MachineState.RESETTING)

    def _cmd_unlock(self) -> None:
        if self.m.state in STOPPED_STATES and self.job is None:
            self.driver.unlock()

    def _cmd_reconnect(self) -> None:
        self._finish("failed", "reconnect requested", "reconnect", MachineState.CONNECTING)
        raise _Reconnect

    def _cmd_estop(self, who: str) -> None:
        """The bytes already went out from the caller's thread; here the state catches up.

        Marlin halts until someone resets it: fault. GRBL resets itself: wait for its banner, then it
        is idle, or locked in alarm if it was moving.
        """
        after, immediate = self.driver.emergency_stop()
        self._emit(me.EmergencyStop, by=who, acted_on_arrival=immediate)
        self._finish("failed", f"emergency stop{' by ' + who if who else ''}", "emergency-stop", after)
        self._set_state(after)

    def _safe_state_now(self, reason: str) -> None:
        """The profile's safe state; its callers have checked the machine is idle or in alarm."""
        self.safe_pending = ""
        stop = self.driver.safe_state()
        if stop.now:
            self.link.write(stop.now)
        if stop.after_reset:
            self._after_reset = lambda: self.driver.send_script(stop.after_reset)
        self._emit(me.SafeState, reason=reason, actions=stop.actions)
        self.safe_done = self._safe_seen  # after the event is queued: a waiter then finds it there

    def _cmd_console(self, action: ConsoleAction, answer: Any) -> None:
        self.console.take(action, answer, time.monotonic())

    # ---- for the console (console.py) -----------------------------------------------------------
    def emit(self, event: Callable[..., MachineEvent], **facts: Any) -> None:
        self._emit(event, **facts)

    def set_state(self, state: MachineState) -> None:
        self._set_state(state)

    def write_now(self, data: bytes) -> None:
        if data:
            self.link.write(data)

    def job_line_done(self, pos: Any, text: str) -> None:
        """A job line the agent carried out itself (GRBL's M6): answered as if the firmware had."""
        if self.job is not None and isinstance(pos, JobPos):
            self.job.on_acked(pos, (text,))
            self.job.held_for_tool = False

    def prompt_answered(self, by: str) -> None:
        self.console.answered(by)
        if self.job is not None and self.m.state == MachineState.WAITING:
            self._set_state(MachineState.PRINTING, heating=self.job.heating)

    def _cmd_script(self, name: str, lines: tuple[str, ...]) -> None:
        if self.m.state == MachineState.IDLE and self.job is None:
            self.driver.send_script(lines)
            self._emit(me.ScriptSent, name=name, lines=tuple(lines))

    def _stall(self, now: float) -> None:
        """A job whose firmware went silent: alarm now, safe state after the profile's grace."""
        if not self._stall_since:
            self._stall_since = now
            timeouts = self.profile.timeouts
            self._emit(me.Stall, silent_s=timeouts.ok_s, safe_state_in_s=timeouts.stall_grace_s)

    def _stalled_safe_state(self) -> None:
        """The firmware stopped answering and the grace is over: stop it by the out-of-band way."""
        self._stall_since = 0.0
        stop = self.driver.stall_stop()
        with contextlib.suppress(LinkLost):  # a vanished port is found by the next read
            self.link.write(stop.now)
        self._finish("failed", "the firmware stopped answering (stall)", "stall", stop.state)
        self._set_state(stop.state)
        self._emit(me.SafeState, reason="stall", actions=stop.actions)

    # ---- events from the core -------------------------------------------------------------------
    def _on_event(self, event: ev.Event, now: float) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, now)

    def _answer_seen(self) -> None:
        """An answer ends a stall."""
        if self._stall_since:
            self._stall_since = 0.0
            self._emit(me.StallCleared)

    def _on_acked(self, event: ev.LineAcked, now: float) -> None:
        self._answer_seen()
        job = self.job
        if event.text in ("$X", "$H") and self.m.state in STOPPED_STATES:
            self._set_state(MachineState.IDLE)
        elif isinstance(event.tag, JobPos) and job is not None:
            self._answered += event.size
            self._answered_lines += 1
            if job.on_acked(event.tag, (event.text,)):
                self._emit(me.FirstLine, heating=job.heating)  # on the machine: its active time starts
        elif event.tag == END_MARK and job is not None:
            outcome = job.ending or "completed"
            self._finish(outcome, job.ending_who if outcome == "cancelled" else "", outcome)

    def _on_acked_run(self, event: ev.LinesAcked, now: float) -> None:
        """A burst's job lines answered: what `_on_acked` does for each, at once."""
        job = self.job
        if job is None or not isinstance(event.tags[-1], JobPos):
            for each in event.each():
                self._on_acked(each, now)
            return
        self._answer_seen()
        self._answered += sum(event.sizes)
        self._answered_lines += len(event.texts)
        if job.on_acked(event.tags[-1], event.texts):
            self._emit(me.FirstLine, heating=job.heating)

    def _on_fault(self, event: ev.Fault, now: float) -> None:
        if self.m.state == MachineState.CONNECTING and event.code == "firmware-reset":
            raise _Reconnect  # it rebooted while we said hello (a slow boot, DTR): say hello again
        if event.code == "no-answer" and self.job is not None:
            self._stall(now)  # GRBL goes straight here; Marlin after its probes
        self._emit(me.Fault, reason=event.reason, code=event.code)
        self._finish("failed", event.reason, event.code, MachineState.FAULT)  # fault first: it is why
        self._set_state(MachineState.FAULT)

    def _on_info(self, event: ev.FirmwareInfo, now: float) -> None:
        self.m.firmware = event.name
        self.driver.on_firmware_info(event)
        if self.m.state in (MachineState.CONNECTING, MachineState.RESETTING):
            self._set_state(MachineState.ALARM if self.driver.locked else MachineState.IDLE)
            self.ready.set()
            if self.safe_pending:
                self._safe_state_now(self.safe_pending)

    def _on_reset(self, event: ev.FirmwareReset, now: float) -> None:
        self._emit(me.FirmwareReset, banner=event.banner, mid_job=event.mid_job)
        if not event.mid_job:
            then, self._after_reset = self._after_reset, None
            if then:
                then()

    def _on_temperatures(self, event: ev.Temperatures, now: float) -> None:
        self.m.temperatures = {**self.m.temperatures, **event.heaters}
        self.m.heat_eta_s = self.heat.report(event.heaters, now)
        self._telemetry(now)

    def _on_position(self, event: ev.Position, now: float) -> None:
        self.m.position = dict(event.axes)

    def _on_probe_result(self, event: ev.ProbeResult, now: float) -> None:
        self.console.on_probe(event)

    def _on_user_wait(self, event: ev.UserWait, now: float) -> None:
        self.console.on_user_wait(event)

    def _on_host_prompt(self, event: ev.HostPrompt, now: float) -> None:
        self.console.on_host_prompt(event)

    def _on_work_offset(self, event: ev.WorkOffset, now: float) -> None:
        self.m.work_offset = dict(event.axes)

    def _on_status(self, status: ev.MachineStatus, now: float) -> None:
        label = status.state + (f":{status.substate}" if status.substate is not None else "")
        self.m.grbl_fields = dict(status.fields)
        if label != self.m.grbl_state:
            self.m.grbl_state = label
            if status.state == "Door" and self.m.state == MachineState.PRINTING and self.job is not None:
                self.job.paused = True
                self._set_state(MachineState.PAUSED)
                self._emit(me.DoorOpen, state=label)
        self._telemetry(now)

    def _on_warning(self, event: ev.FirmwareWarning, now: float) -> None:
        line = event.tag.line if isinstance(event.tag, JobPos) else None
        self._emit(me.MachineWarning, text=event.text, line=line)
        job = self.job
        if job is None:
            return
        if job.check:
            job.check_errors.append({"line": line, "text": event.text})
        elif self.stop_on_grbl_error and not job.ending and self.driver.stops_on_error():
            self._cmd_cancel("firmware error")
            job.ending_reason = f"line {line}: {event.text}" if line else event.text

    def _on_alarm(self, event: ev.Alarm, now: float) -> None:
        self.console.on_alarm()
        self._emit(me.Alarm, code=event.code, meaning=event.meaning)
        if self.job is None and self.m.state in (MachineState.IDLE, MachineState.CONNECTING):
            self._set_state(MachineState.ALARM)

    def _on_action(self, event: ev.ActionCommand, now: float) -> None:
        self._emit(me.Action, name=event.name, args=event.args)
        if event.name in ("pause", "paused"):
            self._cmd_pause()
        elif event.name in ("resume", "resumed"):
            self._cmd_resume()
        elif event.name == "cancel":
            self._cmd_cancel("printer")

    def _on_probe(self, event: ev.ProbeSent, now: float) -> None:
        if event.attempt == 1 and self.job is not None:
            self._stall(now)

    def _finish(self, outcome: str, reason: str, code: str, state: MachineState | None = None) -> None:
        """End the running job, if any. `state` is where the machine goes (set before the job's end is
        told, so that nothing reads the machine idle in between); by default idle, or alarm if locked."""
        job = self.job
        if job is None:
            return
        self.console.job_ended()
        job.file.close()
        self.job = None
        self.driver.end_job()
        if outcome == "failed":
            self.driver.core.discard_job()  # its lines not yet sent must not run after its end
        self.m.result = job.result(outcome, reason, code, self._counters())
        if state is None and self.m.state in JOB_STATES:
            state = MachineState.ALARM if self.driver.locked else MachineState.IDLE
        if state is not None:
            self._set_state(state)
        self._emit(me.JobFinished, result=self.m.result)
        self.job_done.set()

    def _lost(self, reason: str) -> None:
        self.link.close()
        self.m.last_error = reason
        if self.m.state != MachineState.DISCONNECTED:  # retries while the port stays away are not news
            self._emit(me.LinkLost, reason=reason)
        self._finish("failed", reason, "link-lost", MachineState.DISCONNECTED)
        self._set_state(MachineState.DISCONNECTED)

    def _telemetry(self, now: float) -> None:
        if now - self._last_telemetry >= TELEMETRY_EVERY_S:
            self._last_telemetry = now
            job = self.job
            self._emit(
                me.Telemetry,
                temperatures=dict(self.m.temperatures),
                position=dict(self.m.position),
                grbl_state=self.m.grbl_state,
                progress=job.progress() if job else 0.0,
            )

    def _set_state(self, state: MachineState, heating: bool = False) -> None:
        if state != self.m.state:
            self.m.state = state
            self._emit(me.StateChanged, state=state, heating=heating)

    def _emit(self, event: Callable[..., MachineEvent], **facts: Any) -> None:
        self.m.events.put_nowait(event(self.m.name, time.time(), **facts))


_HANDLERS: dict[type[ev.Event], Callable[[MachineLoop, Any, float], None]] = {
    ev.LineAcked: MachineLoop._on_acked,
    ev.LinesAcked: MachineLoop._on_acked_run,
    ev.Fault: MachineLoop._on_fault,
    ev.FirmwareInfo: MachineLoop._on_info,
    ev.FirmwareReset: MachineLoop._on_reset,
    ev.Temperatures: MachineLoop._on_temperatures,
    ev.Position: MachineLoop._on_position,
    ev.MachineStatus: MachineLoop._on_status,
    ev.FirmwareWarning: MachineLoop._on_warning,
    ev.Alarm: MachineLoop._on_alarm,
    ev.ActionCommand: MachineLoop._on_action,
    ev.ProbeSent: MachineLoop._on_probe,
    ev.ProbeResult: MachineLoop._on_probe_result,
    ev.UserWait: MachineLoop._on_user_wait,
    ev.HostPrompt: MachineLoop._on_host_prompt,
    ev.WorkOffset: MachineLoop._on_work_offset,
}
