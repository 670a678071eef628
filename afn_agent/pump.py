"""The job pump: the one owner of running jobs and of the machines' alarms.

Its thread reads the machines' events, moves jobs along the state machine in the ledger, checkpoints
them, ends them with a usage record, starts queued jobs on idle machines, and runs the guards. Other
threads read through `running_ids`, `alarms_of` and `figures`, which hand out copies, and act through
`mark_cancelled`; all under one plain lock the pump never holds while calling out.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .access.sessions import Sessions
from .config import AgentConfig
from .console_service import job_outside_travel
from .intake import sweep
from .ledger import JobClock, Ledger, Tariff
from .ledger.alarms import SHOWN, AlarmBook
from .machine import events as me
from .machine.events import JobResult, MachineEvent, MachineState
from .machine.worker import Machine
from .materials import Material, from_snapshot, loaded
from .metered import Meter
from .publisher import Publisher

log = logging.getLogger("afn_agent")
DISPATCH_EVERY_S = 0.25
SPOOL_SWEEP_S = 60.0  # files of ended jobs past their retention leave the spool
MANAGER_ACTORS = ("manager", "admin")


class Powering(Protocol):
    """What the pump needs of the power keeper (power/keeper.py)."""

    def check(self, now: float) -> None: ...
    def blocked(self, machine_id: str) -> str: ...
    def metered(self) -> dict[str, float]: ...


class Guarding(Protocol):
    """What the pump needs of the guards (safety.py)."""

    def check(self, now: float) -> None: ...
    def blocked(self, machine_id: str) -> bool: ...
    def touch(self, machine_id: str) -> None: ...


@dataclass
class RunningJob:
    """A job on a machine, as the pump tracks it between checkpoints."""

    job_id: str
    clock: JobClock
    used: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: float = 0.0
    cancelled_by: str = ""
    material: Material | None = None  # the preset loaded when it started: its density weighs, its price bills
    tariff: Tariff | None = None  # the tariff in force when it started (a reload does not reprice it)
    meter: Meter | None = None  # a power-only machine's session: busy time from its plug
    session_id: str | None = None


def figures_of(run: RunningJob, now: float, material: str = "filament") -> dict[str, Any]:
    """A checkpoint: the time split as of now, what the acknowledged lines used, and the material."""
    figures: dict[str, Any] = dict(run.clock.split(now))
    if run.meter is not None:
        return run.meter.figures(figures)
    used = run.used
    figures.update(
        material_per_tool=used.get("material_per_tool", {}),
        material_mm=used.get("material_mm", 0.0),
        material_g=used.get("material_g", 0.0),
        material_kind=run.material.name if run.material else material,
        material_preset=run.material.snapshot() if run.material else None,
        beam_on_s=used.get("beam_on_s", 0.0),
        spindle_on_s=used.get("spindle_on_s", 0.0),
        done_fraction=used.get("done_fraction", 0.0),
        lines=used.get("lines", 0),
    )
    return figures


def stop_type_for(result: JobResult, cancelled_by: str) -> tuple[str, str]:
    """(outcome, stop type) of a job the machine ended; the ledger prices it by the stop type."""
    if result.outcome == "completed":
        return "completed", "normal"
    if result.outcome == "cancelled":
        if cancelled_by in MANAGER_ACTORS:
            return "cancelled", "admin"
        if cancelled_by == "session-end":
            return "cancelled", "permission"
        return "cancelled", "cancelled"
    if result.code == "emergency-stop":
        return "cancelled", "admin" if cancelled_by in MANAGER_ACTORS else "cancelled"
    if result.code in ("link-lost", "reconnect"):
        return "failed", "offline"
    return "failed", "fault"


class JobPump:
    def __init__(
        self,
        config: AgentConfig,
        ledger: Ledger,
        machines: dict[str, Machine],
        events: queue.Queue[MachineEvent],
        publisher: Publisher,
        sessions: Sessions | None,
        telemetry: Callable[[str], dict[str, Any]],
    ) -> None:
        self.config, self.ledger, self.machines, self.events = config, ledger, machines, events
        self.publisher, self.sessions, self.telemetry = publisher, sessions, telemetry
        self.guards: Guarding | None = None
        self.power: Powering | None = None
        self.on_turn: Callable[[float], None] = lambda now: None  # the systemd watchdog's ping
        self.on_second: Callable[[], None] = lambda: None  # the agent's machine restarts after a reload
        self.held_back: frozenset[str] = frozenset()  # machines no job may start on (a restart waits)
        self.draining = False  # the agent is stopping: running jobs may end, no job starts
        self._interrupting: dict[str, str] = {}  # machine -> why its job is being ended as interrupted
        self.ledger_error = ""
        self._running: dict[str, RunningJob] = {}
        self.alarm_book = AlarmBook(ledger)
        self._alarms: dict[str, tuple[dict[str, Any], ...]] = self.alarm_book.open()  # kept across restarts
        self._lock = threading.Lock()
        self._ending: set[str] = set()  # machines whose job left `_running` in this turn of the pump
        self._job_ended = threading.Condition(self._lock)  # wakes `wait_idle` at the end of that turn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- any thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._pump, name="agent-pump", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def running_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running)

    def busy(self, machine_id: str) -> bool:
        """A job runs on the machine or waits in its queue."""
        with self._lock:
            return self._busy(machine_id)

    def _busy(self, machine_id: str) -> bool:
        """`busy`, under the lock."""
        return machine_id in self._running or self.ledger.next_queued(machine_id) is not None

    def wait_idle(self, machine_id: str, timeout: float) -> bool:
        """Until the machine has no job running, ending or queued: woken once a job's end is recorded and
        published, and looking again every dispatch tick (a queued job may be held instead). A 20 Hz poll
        cost the streaming threads the GIL's hand-overs: 1-2 µs a streamed line in bench/cpu.py."""
        deadline = time.monotonic() + timeout
        with self._job_ended:
            while self._busy(machine_id) or machine_id in self._ending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._job_ended.wait(min(left, DISPATCH_EVERY_S))
        return True

    def job_id(self, machine_id: str) -> str | None:
        with self._lock:
            run = self._running.get(machine_id)
            return run.job_id if run else None

    def used(self, machine_id: str) -> dict[str, Any]:
        with self._lock:
            run = self._running.get(machine_id)
            return dict(run.used) if run else {}

    def figures(self, machine_id: str) -> dict[str, Any] | None:
        """The running job's time split and material so far (None when no job runs)."""
        with self._lock:
            run = self._running.get(machine_id)
            return self._figures(machine_id, run, time.monotonic()) if run else None

    def alarms_of(self, machine_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._alarms.get(machine_id, ())]

    def mark_cancelled(self, machine_id: str, actor: str) -> bool:
        """Who asked for the running job's end decides its stop type; False if none runs."""
        with self._lock:
            run = self._running.get(machine_id)
            if run is not None:
                run.cancelled_by = actor
            return run is not None

    def interrupt(self, reason: str) -> list[str]:
        """The agent stops and its grace is over: every running job is to end as interrupted (billed by
        the offline policy, as after a crash) when its machine reports its end. Returns those machines."""
        with self._lock:
            self._interrupting = dict.fromkeys(self._running, reason)
            return list(self._interrupting)

    def lock_machine(self, machine_id: str, reason: str) -> bool:
        """A maintenance lock: at once on an idle machine, else pending until its job ends (decided
        under the lock the job's end takes, so a lock is never left pending on an idle machine)."""
        with self._lock:
            busy = machine_id in self._running
            self.ledger.set_machine(
                machine_id, lock_reason=reason, **({"lock_pending": 1} if busy else {"locked": 1})
            )
        return busy

    def raise_alarm(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        """An alarm the agent itself detected (an interlock, a power switch): kept in the status until a
        person clears it, sent on events."""
        self._remember_alarm(machine_id, kind, data, time.time())
        self.publisher.event(machine_id, kind, data)
        self.publisher.status_changed(machine_id)

    def clear_alarms(self, machine_id: str, actor: str) -> int:
        """A person has seen the machine's alarms; returns how many were open."""
        with self._lock:
            cleared = self.alarm_book.clear(machine_id, actor)
            self._alarms.pop(machine_id, None)
        return cleared

    # ---- the pump thread --------------------------------------------------------------------------
    def _pump(self) -> None:
        """One event at a time, ledger first. A ledger that cannot be written (disk full, I/O error) keeps
        the event for a retry with its own time: nothing is billed from memory, nothing is dropped."""
        ticks = {"dispatch": 0.0, "idle": 0.0, "spool": 0.0}
        retry: deque[tuple[MachineEvent | None, float]] = deque()
        while not self._stop.is_set():
            if retry:
                event, now = retry.popleft()
            else:
                try:
                    event = self.events.get(timeout=DISPATCH_EVERY_S)
                except queue.Empty:
                    event = None
                now = time.monotonic()
            try:
                self._turn(event, now, ticks)
                self.ledger_error = ""
            except sqlite3.OperationalError as exc:
                if not self.ledger_error:
                    log.error("ledger write failed (%s): events kept and retried", exc)
                self.ledger_error = f"the ledger cannot be written: {exc}"
                if event is not None:
                    retry.appendleft((event, now))
                self._stop.wait(1.0)

    def _turn(self, event: MachineEvent | None, now: float, ticks: dict[str, float]) -> None:
        if event is not None:
            self.handle(event, now)
        self._checkpoints(now)
        if now >= ticks["dispatch"]:
            ticks["dispatch"] = now + DISPATCH_EVERY_S
            self._dispatch(now)
        if now >= ticks["spool"]:
            ticks["spool"] = now + SPOOL_SWEEP_S
            sweep(self.config, self.ledger)
        if now >= ticks["idle"]:
            ticks["idle"] = now + 1.0
            if self.sessions is not None:
                self.sessions.close_idle(self._in_use())
            if self.guards is not None:
                self.guards.check(now)
            if self.power is not None:
                self._metered_sessions(now)
                self.power.check(now)
            self.on_second()
        self.on_turn(now)
        if event is not None:
            self._forward(event)
        if self._ending:  # a job's end is recorded and published: its waiters may go on
            with self._lock:
                self._ending.clear()
                self._job_ended.notify_all()

    def _forward(self, event: MachineEvent) -> None:
        """Events worth keeping go through the outbox; status and telemetry straight to the bus."""
        if event.published:
            self.publisher.event(event.machine, event.kind, event.payload())
        if event.alarm:  # kept until a person clears it, whatever the machine does next
            self._remember_alarm(event.machine, event.kind, event.payload(), event.t)
        if isinstance(event, me.Telemetry | me.Progress):
            self.publisher.telemetry(event.machine, self.telemetry(event.machine))
        if event.status:
            self.publisher.status_changed(event.machine)

    def _remember_alarm(self, machine_id: str, kind: str, data: dict[str, Any], t: float) -> None:
        """Ledger first: an alarm outlives the agent."""
        with self._lock:
            alarm = self.alarm_book.add(machine_id, kind, data, t)
            self._alarms[machine_id] = (*self._alarms.get(machine_id, ()), alarm)[-SHOWN:]

    def handle(self, event: MachineEvent, now: float) -> None:
        """A machine event for the job running there, if any: the job's state follows the machine's."""
        run = self._running.get(event.machine)
        if run is None:
            return
        if isinstance(event, me.Progress):
            with self._lock:
                run.used = event.used
        elif isinstance(event, me.PowerSample) and run.meter is not None:
            with self._lock:
                run.meter.sample(event.at, event.watts)
        elif isinstance(event, me.FirstLine) and run.clock.state == "starting":
            self._move(
                event.machine, run, "heating" if event.heating else "running", "first line answered", now
            )
        elif isinstance(event, me.Heating):
            self._move(event.machine, run, "heating" if event.on else "running", "heat wait", now)
        elif isinstance(event, me.StateChanged):
            if event.state == MachineState.PAUSED:
                self._move(event.machine, run, "paused", "paused", now)
            elif event.state == MachineState.WAITING:
                self._move(event.machine, run, "waiting", "waiting for a person", now)
            elif event.state == MachineState.PRINTING and run.clock.state in ("paused", "waiting"):
                self._move(event.machine, run, "heating" if event.heating else "running", "resumed", now)
        elif isinstance(event, me.JobFinished):
            self._finish(event.machine, run, event.result, now)

    def _move(self, machine_id: str, run: RunningJob, state: str, cause: str, now: float) -> None:
        if run.clock.state == state:
            return
        if run.clock.state in ("paused", "waiting") and cause == "heat wait":
            return  # a paused (or waiting) job stays so whatever the heaters do
        self.ledger.transition(run.job_id, state, cause)
        with self._lock:
            run.clock.move(state, now)
        if state == "paused" or cause == "resumed":
            self.publisher.event(machine_id, "job-" + cause, {"job_id": run.job_id})

    def _checkpoints(self, now: float) -> None:
        for machine_id, run in list(self._running.items()):
            if now - run.last_checkpoint >= self.config.checkpoint_s:
                run.last_checkpoint = now
                self.ledger.checkpoint(run.job_id, self._figures(machine_id, run, now))

    def _figures(self, machine_id: str, run: RunningJob, now: float) -> dict[str, Any]:
        """A checkpoint of a running job (the pump thread, or a reader holding the lock)."""
        m = self.config.find(machine_id)
        return figures_of(run, now, m.material if m else "filament")

    def _dispatch(self, now: float) -> None:
        """Start the next queued job on every idle machine that has none running."""
        if self.draining:
            return
        for machine_id, machine in self.machines.items():
            if machine_id in self._running or machine.state != MachineState.IDLE or self._blocked(machine_id):
                continue
            if machine_id in self.held_back or (self.power is not None and self.power.blocked(machine_id)):
                continue
            if self.guards is not None and self.guards.blocked(machine_id):
                continue
            if self.sessions is not None:
                self.sessions.release_held(machine_id)
            job = self._next_startable(machine_id)
            if job is None:
                continue
            material = loaded(self.config, self.ledger, machine_id)
            tariff = self.config.tariff_for(machine_id, material)
            run = RunningJob(job["id"], JobClock("starting", now), last_checkpoint=now, material=material,
                             tariff=tariff)  # fmt: skip
            with self._lock:  # queued to running at once for readers (`busy`)
                self.ledger.transition(job["id"], "starting", "dispatched to an idle machine")
                self._running[machine_id] = run
            self.ledger.checkpoint(job["id"], self._figures(machine_id, run, now))
            machine.start_job(job["path"], density_g_cm3=material.density_g_cm3 if material else None)
            self.ledger.audit("agent", "job-start", "started", machine_id, job["id"], member=job["member_id"])
            self.publisher.event(
                machine_id, "job-started",
                {"job_id": job["id"], "name": job["name"], "member_id": job["member_id"]},
            )  # fmt: skip
            log.info("job %s started on %s", job["id"], machine_id)

    def _in_use(self) -> set[str]:
        """Machines whose session is not idle: a job runs (at a power-only machine: its plug reads busy)."""
        with self._lock:
            return {m for m, run in self._running.items() if run.meter is None or run.meter.in_use}

    def _metered_sessions(self, now: float) -> None:
        """Power-only machines: a member's session is their job, busy time measured at the plug; it
        starts with the session and ends (with its usage record) when the session closes."""
        assert self.power is not None
        for machine_id, threshold_w in self.power.metered().items():
            session = self.sessions.current(machine_id) if self.sessions is not None else None
            run = self._running.get(machine_id)
            if run is not None and (session is None or session["id"] != run.session_id):
                self._finish(machine_id, run, JobResult("completed", "the session ended", "session-end"), now)
                run = None
            if run is None and session is not None:
                self._open_metered(machine_id, session, threshold_w, now)

    def _open_metered(self, machine_id: str, session: dict[str, Any], threshold_w: float, now: float) -> None:
        who = {k: session[k] for k in ("member_id", "supervisor_id", "booking_id")}
        who["session_id"] = session["id"]
        name = f"session of {who['member_id']}"
        job_id = self.ledger.add_job(machine_id, "", name, "", 0, "session", {}, **who)
        tariff = self.config.tariff_for(machine_id)
        run = RunningJob(job_id, JobClock("running", now), last_checkpoint=now, tariff=tariff,
                         meter=Meter(threshold_w), session_id=session["id"])  # fmt: skip
        with self._lock:
            self.ledger.transition(job_id, "starting", "a session opened at a power-only machine")
            self.ledger.transition(job_id, "running", "its use is measured at the plug")
            self._running[machine_id] = run
        self.publisher.event(machine_id, "job-started", {"job_id": job_id, "name": name, **who})

    def _blocked(self, machine_id: str) -> bool:
        row = self.ledger.machine(machine_id)
        return bool(row and (row["locked"] or row["needs_confirmation"]))

    def _next_startable(self, machine_id: str) -> dict[str, Any] | None:
        """The first queued job that may start now. One that may not (its owner's session ended: it was
        released outside it, or Start was pressed before a bed-clear confirmation and then the member
        left) goes back to held, waiting for its owner's badge, and is reported: it must not block the
        queue behind it."""
        for job in self.ledger.jobs(machine_id, ("queued",)):  # next first
            outside = job_outside_travel(self.machines[machine_id], job)
            if not outside and (self.sessions is None or self.sessions.may_start(machine_id, job)):
                return job
            why = (
                outside.words()["en"] + " Set the work zero again, then start it."
                if outside
                else "its owner is not in a session at the machine; held until their badge"
                if job["member_id"]
                else "nobody owns it (a shared key sent it): held until a member at the machine claims it"
            )
            self.ledger.transition(job["id"], "held", why)
            self.ledger.audit(
                "agent", "job-hold", "held", machine_id, job["id"], member=job["member_id"], reason=why
            )
            self.publisher.event(machine_id, "job-held", {"job_id": job["id"], "member_id": job["member_id"],
                                                          "reason": why})  # fmt: skip
            log.info("job %s on %s back to held: %s", job["id"], machine_id, why)
        return None

    def _finish(self, machine_id: str, run: RunningJob, result: JobResult, now: float) -> None:
        outcome, stop_type = stop_type_for(result, run.cancelled_by or result.reason)
        reason = result.reason
        with self._lock:
            if machine_id in self._interrupting:  # ended by a stop past its grace: as a crash would
                outcome, stop_type, reason = "interrupted", "offline", self._interrupting.pop(machine_id)
        with self._lock:
            if result.outcome == "completed" and run.clock.state == "starting":
                run.clock.move("running", now)  # a job too short to report: its time was streaming
            run.used = result.used or run.used
        m = self.config.find(machine_id)
        figures = self._figures(machine_id, run, now)
        record = self._close(machine_id, run.job_id, outcome, stop_type, reason, figures, tariff=run.tariff)
        with self._lock:
            del self._running[machine_id]
            self._ending.add(machine_id)
            locked = self._apply_pending_lock(machine_id)
        if self.config.spool.keep_h == 0:
            sweep(self.config, self.ledger)  # its file goes as the job ends
        self.publisher.event(machine_id, "job-" + outcome, _record_summary(record))
        if locked:
            self.publisher.event(machine_id, "lock", {"by": "agent", "reason": locked, "pending": False})
        if m and m.confirm_clear and outcome == "completed":
            self.ledger.set_machine(machine_id, needs_confirmation="bed-clear")
        if outcome == "interrupted":  # a person looks at the machine before the next job
            self.ledger.set_machine(machine_id, needs_confirmation="interrupted")
        if self.sessions is not None:
            self.sessions.touch(machine_id)
        if self.guards is not None:
            self.guards.touch(machine_id)

    def _close(
        self,
        machine_id: str,
        job_id: str,
        outcome: str,
        stop_type: str,
        reason: str,
        figures: dict[str, Any],
        replayed: bool = False,
        tariff: Tariff | None = None,
    ) -> dict[str, Any]:
        """The job's end and its usage record, priced by the tariff it started under (else the machine's
        tariff now): one ledger transaction."""
        m = self.config.find(machine_id)
        tariff = tariff or self.config.tariff_for(machine_id, from_snapshot(figures.get("material_preset")))
        return self.ledger.finish(
            job_id, outcome, stop_type, reason, figures, tariff, m.machine_class if m else "unknown",
            replayed=replayed,
        )  # fmt: skip

    def _apply_pending_lock(self, machine_id: str) -> str:
        """A lock asked for while the job ran takes effect now; returns its reason ('' if none)."""
        row = self.ledger.machine(machine_id)
        if not (row and row["lock_pending"]):
            return ""
        self.ledger.set_machine(machine_id, locked=1, lock_pending=0)
        return str(row["lock_reason"])

    # ---- start and stop (the pump thread is not running) ------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Jobs the ledger shows on a machine when the agent starts were cut off by a crash or power
        loss: close each as interrupted, billed up to its last checkpoint, once."""
        records = []
        for job in self.ledger.live_jobs():
            machine_id = job["machine_id"]
            figures = json.loads(job["checkpoint_json"]) if job["checkpoint_json"] else {}
            why = f"agent stopped while the job ran; billed to its last checkpoint ({job['checkpoint_at']})"
            record = self._close(machine_id, job["id"], "interrupted", "offline", why, figures, replayed=True)
            self.ledger.audit(
                "agent", "job-interrupted", "closed", machine_id, job["id"], record_id=record["record_id"]
            )
            self.ledger.set_machine(machine_id, needs_confirmation="crash-recovery")
            data = {"job_id": job["id"], "safe_state": "requested", "needs_confirmation": "crash-recovery"}
            self.publisher.event(machine_id, "recovery", data)
            records.append(record)
            log.warning("job %s on %s closed as interrupted after a restart", job["id"], machine_id)
        return records

    def close_interrupted(self, reason: str) -> None:
        """After the pump and the machines stopped: what the machine threads said last (a job that
        ended, each closed job's last figures, a safe state taken), then every job still running closed
        as interrupted. A stopped agent once billed 328 lines of a job whose firmware had answered 739,
        and once lost the safe state its stop had just taken."""
        now = time.monotonic()
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, me.Progress | me.JobFinished):
                self.handle(event, now)
            self._forward(event)
        for machine_id, run in list(self._running.items()):
            figures = self._figures(machine_id, run, now)
            self._close(machine_id, run.job_id, "interrupted", "offline", reason, figures, tariff=run.tariff)
            with self._lock:
                del self._running[machine_id]
            self.ledger.set_machine(machine_id, needs_confirmation="interrupted")
        with self._lock:  # every end above is recorded: no pump turn follows to say so
            self._ending.clear()
            self._job_ended.notify_all()


def _record_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the events topic says of an ended job (the full record goes on the usage topic)."""
    return {
        "job_id": record["job"]["id"],
        "record_id": record["record_id"],
        "outcome": record["job"]["outcome"],
        "stop_type": record["job"]["stop_type"],
        "reason": record["job"]["reason"],
        "member_id": record["member_id"],
        "price": record["price"],
        "currency": record["currency"],
    }
