"""One thread per machine: it owns the serial port and the flow-control window, and nothing else.

Other threads talk to it through a command queue and a wake-up pipe; it talks back through an event
queue it never blocks on. Emergency stop and feed hold are written by the caller's thread at once.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..firmware import events as ev
from ..firmware.grbl import FEED_HOLD, REALTIME, GrblProtocol
from ..firmware.marlin import MarlinProtocol
from ..firmware.profile import Profile
from ..gcode.analyzer import Analyzer, analyzer_for
from ..gcode.lexer import lex
from .job import JobError, JobFile, JobPos
from .link import LinkLost, SerialLink
from .safety_actions import SafetyActions

END_MARK = "end-of-job"
CANCEL_HOLD_S = 5.0  # longest a GRBL feed hold may take to stop before cancel resets anyway
TELEMETRY_EVERY_S = 0.5
PROGRESS_EVERY_S = 1.0  # a running job reports what it has used this often (the ledger checkpoints it)
CLOSE_DRAIN_S = 2.0  # closed mid-job: how long to wait for the answers to lines already sent
HEAT_WAITS = frozenset(
    {"M109", "M190", "M191", "M116"}
)  # commands that hold the queue until a heater is at temperature


class _Reconnect(Exception):
    """Raised inside the machine thread to start the connection over."""


@dataclass
class MachineEvent:
    """What the machine thread tells the rest of the agent; `kind` names it, `data` is JSON-ready."""

    kind: str
    machine: str
    t: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    """How a job ended and what it cost the link."""

    outcome: str  # completed | cancelled | failed
    reason: str = ""
    code: str = ""
    lines: int = 0
    bytes: int = 0
    seconds: float = 0.0
    resends: int = 0
    errors: int = 0
    file: str = ""
    check_errors: list[dict] = field(default_factory=list)
    filament_mm: float = 0.0  # what the acknowledged lines extruded (all tools)
    filament_g: float = 0.0
    laser_on_s: float = 0.0  # estimated from the acknowledged lines, as the quote was
    spindle_on_s: float = 0.0
    estimated_s: float = 0.0  # of the acknowledged part of the job
    used: dict[str, Any] = field(
        default_factory=dict
    )  # per tool material and beam/spindle, as in progress events


class Machine(SafetyActions):
    """A machine on a serial port, driven by its own thread."""

    def __init__(
        self,
        name: str,
        profile: Profile,
        port: str,
        baud: int | None = None,
        events: queue.Queue | None = None,
        stop_on_grbl_error: bool = True,
        reconnect_s: float = 2.0,
    ) -> None:
        self.name = name
        self.profile = profile
        self.link = SerialLink(port, baud or profile.link.baud, profile.link.write_timeout_s)
        self.core = self._make_core()
        self.events: queue.Queue = events if events is not None else queue.Queue()
        self.stop_on_grbl_error = stop_on_grbl_error
        self.reconnect_s = reconnect_s
        self.state = "disconnected"
        self.firmware = ""
        self.temperatures: dict[str, tuple[float, float]] = {}
        self.position: dict[str, float] = {}
        self.grbl_state = ""
        self.grbl_fields: dict[str, str] = {}  # the last status report's fields (FS: feed, spindle/laser)
        self.result: JobResult | None = None
        self.last_error = ""
        self._check = False
        self._check_errors: list[dict] = []
        self._usage: Analyzer | None = None
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._job_done = threading.Event()
        self._closing = False
        self._closed = threading.Event()
        self._job: JobFile | None = None
        self._job_t0 = 0.0
        self._job_bytes0 = 0
        self._job_resends0 = 0
        self._job_errors0 = 0
        self._acked: JobPos | None = None
        self._acked_lines = 0
        self._paused = False
        self._ending = ""
        self._ending_who = ""
        self._ending_reason = ""
        self._reset_by = 0.0
        self._after_reset: Any = None
        self._last_telemetry = 0.0
        self._last_progress = 0.0
        self.heating = False
        self.heartbeat = time.monotonic()  # the thread turned; the systemd watchdog reads it
        self._safe_pending = ""  # a safe state asked for before the machine could take it
        self._stall_since = 0.0

    # ---- public, any thread ---------------------------------------------------------------------
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Machine:
        self._thread = threading.Thread(target=self._run, name=f"machine-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float = 15.0) -> bool:
        return self._ready.wait(timeout) and self.state == "idle"

    def start_job(self, path: str | Path, check: bool = False) -> None:
        """Stream a file; with `check` (GRBL) run it in `$C` check mode: parsed, never moved."""
        self._job_done.clear()
        self.result = None
        self._post("job", str(path), check)

    def wait_job(self, timeout: float | None = None) -> JobResult | None:
        self._job_done.wait(timeout)
        return self.result

    def pause(self) -> float:
        """GRBL: `!` written at once (feed hold); Marlin: stop feeding and run the pause script.

        Returns the seconds from the call to the hold byte being written (0 for Marlin)."""
        t = self._urgent(FEED_HOLD) if self.profile.protocol == "grbl" else 0.0
        self._post("pause")
        return t

    def realtime(self, name: str) -> float:
        """A GRBL realtime command by name (overrides, jog cancel, ...), written at once."""
        if self.profile.protocol != "grbl":
            raise ValueError(f"{self.profile.name} has no realtime commands")
        if name not in REALTIME:
            raise ValueError(f"unknown realtime command {name!r} (known: {', '.join(sorted(REALTIME))})")
        if name == "reset":  # the core must know: its banner is then expected, not a power cut
            self._post("soft_reset")
            return 0.0
        return self._urgent(REALTIME[name])

    def resume(self) -> None:
        self._post("resume")

    def cancel(self, who: str = "member") -> None:
        self._post("cancel", who)

    def emergency_stop(self, who: str = "") -> float:
        """Out of band, from the caller's thread: M112 (Marlin) or soft reset (GRBL); returns the delay."""
        self._post("estop", who)
        return self._urgent(self._core_type().STOP_BYTES)

    def close(self) -> None:
        self._closing = True
        self._closed.set()
        self.link.wake()
        if self._thread:
            self._thread.join(5)
        self.link.close()
        self.link.release()

    def snapshot(self) -> dict[str, Any]:
        """A copy of the machine's state for the API, the bus and the CLI's progress bar."""
        job = self._job
        return {
            "machine": self.name,
            "state": self.state,
            "firmware": self.firmware,
            "job": str(job.path) if job else None,
            "progress": self._progress(),
            "lines_acked": self._acked_lines,
            "filament_mm_used": usage.material.pushed_mm() if (usage := self._usage) else 0.0,
            "temperatures": dict(self.temperatures),
            "position": dict(self.position),
            "grbl_state": self.grbl_state,
            "resends": self.core.resends,
            "errors": self.core.errors,
            "bytes_sent": self.link.bytes_written,
            "window_bytes": self.core.window.bytes,
            "planner_free": self.core.planner_free,
        }

    def unlock(self) -> None:
        """After an alarm a person has dealt with (GRBL `$X`); the machine may take jobs again."""
        self._post("unlock")

    def reconnect(self) -> None:
        """Start afresh after a fault a person has dealt with: new protocol state, new handshake."""
        self._ready.clear()
        self._post("reconnect")

    def _core_type(self) -> type[MarlinProtocol] | type[GrblProtocol]:
        return MarlinProtocol if self.profile.protocol == "marlin" else GrblProtocol

    def _make_core(self) -> MarlinProtocol | GrblProtocol:
        return self._core_type()(self.profile, time.monotonic())

    def _post(self, *cmd: Any) -> None:
        self._cmds.put(cmd)
        self.link.wake()

    def _urgent(self, data: bytes) -> float:
        t0 = time.monotonic()
        try:
            self.link.write(data)
        except LinkLost:
            return -1.0
        return time.monotonic() - t0

    # ---- the machine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        """Connect, stream, and when the port vanishes fail the job and try again until closed."""
        try:
            self._loop()
        finally:
            if self._job is not None:  # closed mid-job: the agent records exactly what was answered
                self._emit("progress", self._used())

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._connect()
                while not self._closing:
                    self._step()
                self._answers_before_close()
            except _Reconnect:
                self.link.close()
                continue
            except LinkLost as exc:
                self._lost(str(exc))
            except Exception as exc:  # a bug must still end the job loudly, never leave a silent thread
                self._emit("fault", {"reason": f"internal error: {exc!r}", "code": "internal"})
                if self._job is not None:
                    self._finish("failed", f"internal error: {exc!r}", "internal")
                self._set_state("fault")
                self._ready.set()
                raise
            self._ready.set()
            if not self.reconnect_s:
                return
            self._drain_commands()
            self._closed.wait(self.reconnect_s)
            self.heartbeat = time.monotonic()

    def _connect(self) -> None:
        self.core = self._make_core()
        self.link.open()
        if self._safe_pending and isinstance(self.core, MarlinProtocol):
            self._break_waits()
        self._set_state("connecting")
        self.core.handshake(time.monotonic())
        deadline = time.monotonic() + self.profile.link.open_delay_s + 10.0
        retry_at = time.monotonic() + self.profile.link.open_delay_s + 2.0
        heard = 0
        while not self._closing and self.state == "connecting":
            now = self.heartbeat = time.monotonic()
            if now > deadline:
                raise LinkLost(f"{self.link.port_name}: no answer from a {self.profile.name} firmware")
            if now > retry_at:
                retry_at = now + 2.0
                # greet again only a silent firmware (it missed our hello while booting): one that
                # talks but answers slowly is waited for, not greeted twice (M115 run twice)
                if self.core.lines_heard == heard:
                    self.core.handshake(now)
                heard = self.core.lines_heard
            self._io(now, 0.05)

    def _step(self) -> None:
        self.heartbeat = time.monotonic()
        self._drain_commands()
        self._feed()
        self._io(time.monotonic(), 0.1)
        now = time.monotonic()
        if self._reset_by:
            self._reset_when_stopped(now)
        if self._stall_since and now - self._stall_since > self.profile.timeouts.stall_grace_s:
            self._stalled_safe_state()
        if self._job is not None:
            self._watch_heating()
            if now - self._last_progress >= PROGRESS_EVERY_S:
                self._last_progress = now
                self._emit("progress", self._used())

    def _answers_before_close(self) -> None:
        """Closed mid-job: feed nothing more, but read the answers to what the firmware already has (up
        to CLOSE_DRAIN_S), so the job is billed for every line it ran, not for the last progress report."""
        deadline = time.monotonic() + CLOSE_DRAIN_S
        while (
            self._job is not None
            and self.core.oldest_unanswered() is not None
            and time.monotonic() < deadline
        ):
            self._io(time.monotonic(), 0.05)

    def _watch_heating(self) -> None:
        """Heating while the oldest unanswered line is a heat-and-wait: the firmware holds there."""
        oldest = self.core.oldest_unanswered()
        word = oldest.text.split(None, 1)[0].upper() if oldest and oldest.text else ""
        heating = word in HEAT_WAITS and not self._paused
        if heating != self.heating:
            self.heating = heating
            self._emit("heating", {"on": heating, "command": oldest.text if heating and oldest else ""})

    def _used(self) -> dict[str, Any]:
        """What the acknowledged lines used so far, and how far through the file they are."""
        used = self._usage.used_so_far() if self._usage is not None else {}
        used.update(lines=self._acked_lines, done_fraction=self._progress())
        return used

    def _io(self, now: float, timeout: float) -> None:
        core = self.core
        out = core.urgent_data() + core.data_to_send(now)
        if out:
            self.link.write(out)
        data = self.link.wait(timeout)
        now = time.monotonic()
        core.receive_data(data, now)
        core.tick(now)
        for event in core.events():
            self._on_event(event, now)

    def _feed(self) -> None:
        job = self._job
        if job is None or self._paused or self._ending:
            return
        while self.core.wants_lines():
            try:
                item = job.next_command()
            except JobError as exc:
                self._finish("failed", str(exc), "bad-file")
                return
            if item is None:
                self._ending = "completed"
                self._send_end()
                return
            self.core.send(item[0], item[1])

    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return
            getattr(self, "_cmd_" + cmd[0])(*cmd[1:])

    def _cmd_job(self, path: str, check: bool = False) -> None:
        if self.state != "idle":
            self._refuse(JobResult("failed", f"machine is {self.state}", "busy", file=path))
            return
        parens = self.profile.protocol == "grbl"
        limit = self.profile.link.max_line - (16 if self.core.__class__ is MarlinProtocol else 1)
        try:
            self._job = JobFile(path, parens=parens, max_line=limit)
        except JobError as exc:
            self._refuse(JobResult("failed", str(exc), "bad-file", file=path))
            return
        self._job_t0 = time.monotonic()
        self._usage = analyzer_for(self.profile, path, path)  # the quote's analyzer, fed as lines are acked
        self._job_bytes0 = self.link.bytes_written
        self._job_resends0, self._job_errors0 = self.core.resends, self.core.errors
        self._acked, self._acked_lines, self._paused, self._ending = None, 0, False, ""
        self._check, self._check_errors = check and self.profile.protocol == "grbl", []
        self.core.job_active = True
        if self._check:
            self.core.send("$C", host=True)
        for line in self.profile.scripts.start:
            self.core.send(line, host=True)
        self._set_state("printing")
        self._emit("job-started", {"file": path, "size": self._job.size})

    def _refuse(self, result: JobResult) -> None:
        """A job that never started still ends, with a result saying why."""
        self.result = result
        self._emit("job-finished", result.__dict__)
        self._job_done.set()

    def _cmd_pause(self) -> None:
        if self.state != "printing":
            return
        self._paused = True
        if self.profile.protocol == "marlin":
            for line in self.profile.scripts.pause:
                self.core.send(line, host=True)
        self._set_state("paused")

    def _cmd_resume(self) -> None:
        if self.state != "paused" or self.grbl_state.startswith("Door:1"):
            return
        if self.profile.protocol == "grbl":
            self.link.write(self.core.realtime("resume"))
        else:
            for line in (*self.profile.scripts.resume, *self._modal_restore()):
                self.core.send(line, host=True)
        self._paused = False
        self._set_state("printing")

    def _modal_restore(self) -> list[str]:
        """What the park and unpark scripts may have changed, set back as the job had it.

        Marlin's G90 also makes E absolute: a job extruding with M83 would read its next E values as
        absolute positions. The job's analyzer, fed every acknowledged line, knows the job's modes.
        """
        usage = self._usage
        if usage is None:
            return []
        core = usage.core
        return [
            "G91" if core.relative else "G90",
            "M83" if core.relative_e else "M82",
            f"G1 F{core.feed * 60:.0f}",
        ]

    def _cmd_cancel(self, who: str) -> None:
        """Marlin: stop feeding, run the cancel script. GRBL: hold, reset once stopped, then the script."""
        if self._job is None or self._ending:
            return
        self.core.discard_job()
        self._ending, self._ending_who = "cancelled", who
        if isinstance(self.core, GrblProtocol):
            self.link.write(self.core.feed_hold())
            self._reset_by = time.monotonic() + CANCEL_HOLD_S
            return
        self._cancel_script()

    def _cancel_script(self) -> None:
        for line in self.profile.scripts.cancel:
            self.core.send(line, host=True)
        self._send_end()

    def _reset_when_stopped(self, now: float) -> None:
        """GRBL cancel: a reset once the hold has stopped the axes keeps the position (no ALARM:3)."""
        stopped = isinstance(self.core, GrblProtocol) and self.core.motion_stopped
        if self._reset_by and (stopped or now > self._reset_by):
            self._reset_by = 0.0
            self.link.write(self.core.soft_reset())
            self._after_reset = self._cancel_script

    def _send_end(self) -> None:
        """Commands whose answer means the machine has stopped moving (or, in check mode, left it).

        Marlin: M400 waits for the planner, then M105, whose `ok T:` answers every line before it
        even if some oks were lost on the way.
        """
        if self.profile.protocol == "marlin":
            self.core.send("M400")
            self.core.send("M105", END_MARK)
        else:
            self.core.send("$C" if self._check else "G4 P0", END_MARK)

    def _cmd_soft_reset(self) -> None:
        if self._job is not None:
            self._finish("failed", "the controller was reset by request", "reset")
        self.link.write(self.core.soft_reset())
        if self.state in ("idle", "printing", "paused"):
            self._set_state("resetting")

    def _cmd_unlock(self) -> None:
        if isinstance(self.core, GrblProtocol) and self.state in ("alarm", "fault") and self._job is None:
            self.core.unlock()

    def _cmd_reconnect(self) -> None:
        if self._job is not None:
            self._finish("failed", "reconnect requested", "reconnect")
        raise _Reconnect

    def _cmd_estop(self, who: str) -> None:
        """The bytes already went out from the caller's thread; here the state catches up.

        Marlin halts until someone resets it: fault. GRBL resets itself: wait for its banner, then it
        is idle, or locked in alarm if it was moving.
        """
        self.core.emergency_stop()
        immediate = not isinstance(self.core, MarlinProtocol) or self.core.has_emergency_parser
        self._emit("emergency-stop", {"by": who, "acted_on_arrival": immediate})
        if self._job is not None:
            self._finish("failed", f"emergency stop{' by ' + who if who else ''}", "emergency-stop")
        self._set_state("resetting" if isinstance(self.core, GrblProtocol) else "fault")

    # ---- events from the core -------------------------------------------------------------------
    def _on_event(self, event: ev.Event, now: float) -> None:
        if isinstance(event, ev.LineAcked):
            if self._stall_since:
                self._stall_since = 0.0
                self._emit("stall-cleared", {})
            if event.text == "$X" and self.state in ("alarm", "fault"):
                self._set_state("idle")
            elif isinstance(event.tag, JobPos):
                self._acked = event.tag
                self._acked_lines += 1
                if self._acked_lines == 1:
                    self._emit("first-line", {})  # the job is on the machine: its active time starts
                if self._usage is not None and (cmd := lex(event.text, event.tag.line)) is not None:
                    self._usage.feed(cmd)
            elif event.tag == END_MARK and self._job is not None:
                outcome = self._ending or "completed"
                self._finish(outcome, self._ending_who if outcome == "cancelled" else "", outcome)
        elif isinstance(event, ev.Fault):
            if self.state == "connecting" and event.code == "firmware-reset":
                raise _Reconnect  # it rebooted while we said hello (a slow boot, DTR): say hello again
            if event.code == "no-answer" and self._job is not None:
                self._stall(now)  # GRBL goes straight here; Marlin after its probes
            self._emit("fault", {"reason": event.reason, "code": event.code})
            if self._job is not None:
                self._finish("failed", event.reason, event.code)
            self._set_state("fault")
        elif isinstance(event, ev.FirmwareInfo):
            self.firmware = event.name
            if isinstance(self.core, MarlinProtocol) and event.capabilities.get("AUTOREPORT_TEMP"):
                self.core.send("M155 S2", host=True)
            if self.state in ("connecting", "resetting"):
                locked = isinstance(self.core, GrblProtocol) and self.core.alarm_locked
                self._set_state("alarm" if locked else "idle")
                self._ready.set()
                if self._safe_pending:
                    self._cmd_safe(self._safe_pending)
        elif isinstance(event, ev.FirmwareReset):
            self._emit("firmware-reset", {"banner": event.banner, "mid_job": event.mid_job})
            if isinstance(self.core, GrblProtocol) and not event.mid_job:
                then, self._after_reset = self._after_reset, None
                if then:
                    then()
        elif isinstance(event, ev.Temperatures):
            self.temperatures.update(event.heaters)
            self._telemetry(now)
        elif isinstance(event, ev.Position):
            self.position = dict(event.axes)
        elif isinstance(event, ev.MachineStatus):
            self._on_status(event)
            self._telemetry(now)
        elif isinstance(event, ev.FirmwareWarning):
            line = event.tag.line if isinstance(event.tag, JobPos) else None
            self._emit("warning", {"text": event.text, "line": line})
            if self._check:
                self._check_errors.append({"line": line, "text": event.text})
                return
            core = self.core
            stop = self.stop_on_grbl_error and self._job is not None and not self._ending
            if isinstance(core, GrblProtocol) and stop and not core.check_mode:
                self._cmd_cancel("firmware error")
                self._ending_reason = f"line {line}: {event.text}" if line else event.text
        elif isinstance(event, ev.Alarm):
            self._emit("alarm", {"code": event.code, "meaning": event.meaning})
            if self._job is None and self.state in ("idle", "connecting"):
                self._set_state("alarm")
        elif isinstance(event, ev.ActionCommand):
            self._emit("action", {"name": event.name, "args": event.args})
            if event.name in ("pause", "paused"):
                self._cmd_pause()
            elif event.name in ("resume", "resumed"):
                self._cmd_resume()
            elif event.name == "cancel":
                self._cmd_cancel("printer")
        elif isinstance(event, ev.ProbeSent):
            if event.attempt == 1 and self._job is not None:
                self._stall(now)
        elif isinstance(event, ev.ResendRequested):
            pass

    def _on_status(self, status: ev.MachineStatus) -> None:
        label = status.state + (f":{status.substate}" if status.substate is not None else "")
        self.grbl_fields = dict(status.fields)
        if label != self.grbl_state:
            self.grbl_state = label
            if status.state == "Door" and self.state == "printing":
                self._paused = True
                self._set_state("paused")
                self._emit("door-open", {"state": label})

    def _finish(self, outcome: str, reason: str, code: str) -> None:
        job = self._job
        if job is None:
            return
        if outcome == "cancelled" and self._ending_reason:
            outcome, reason, code = "failed", self._ending_reason, "firmware-error"
        self._ending_reason = self._ending_who = ""
        self.result = JobResult(
            outcome,
            reason,
            code,
            lines=self._acked_lines,
            bytes=self.link.bytes_written - self._job_bytes0,
            seconds=time.monotonic() - self._job_t0,
            resends=self.core.resends - self._job_resends0,
            errors=self.core.errors - self._job_errors0,
            file=str(job.path),
            check_errors=self._check_errors,
            **self._usage_figures(outcome),
        )
        job.close()
        self._job = None
        self._ending = ""
        self.heating = False
        self.core.job_active = False
        self._emit("job-finished", self.result.__dict__)
        if self.state in ("printing", "paused"):
            locked = isinstance(self.core, GrblProtocol) and self.core.alarm_locked
            self._set_state("alarm" if locked else "idle")
        self._job_done.set()

    def _usage_figures(self, outcome: str) -> dict[str, Any]:
        if self._usage is None:
            return {}
        u = self._usage.result()
        used = self._used()
        if outcome == "completed":  # the tail after the last command (comments) counts as done
            used["done_fraction"] = 1.0
        self._usage = None
        return {
            "used": used,
            "filament_mm": u.filament_mm,
            "filament_g": u.filament_g,
            "laser_on_s": u.laser_on_s,
            "spindle_on_s": u.spindle_on_s,
            "estimated_s": u.estimated_s,
        }

    def _lost(self, reason: str) -> None:
        self.link.close()
        self.last_error = reason
        if self.state != "disconnected":  # retries while the port stays away are not news
            self._emit("link-lost", {"reason": reason})
        if self._job is not None:
            self._finish("failed", reason, "link-lost")
        self._set_state("disconnected")

    def _progress(self) -> float:
        job, acked = self._job, self._acked
        if job is None or acked is None or not job.size:
            return 0.0
        return acked.offset / job.size

    def _telemetry(self, now: float) -> None:
        if now - self._last_telemetry >= TELEMETRY_EVERY_S:
            self._last_telemetry = now
            self._emit(
                "telemetry",
                {
                    "temperatures": dict(self.temperatures),
                    "position": dict(self.position),
                    "grbl_state": self.grbl_state,
                    "progress": self._progress(),
                },
            )

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit("state", {"state": state})

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.put_nowait(MachineEvent(kind, self.name, time.time(), data))
