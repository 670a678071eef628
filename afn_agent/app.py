"""The agent: machines, ledger and bus wired together.

Machine threads hand their events to one queue; the pump thread here turns them into job transitions,
checkpoints and usage records in the ledger, and passes them on to the bus. It also starts queued jobs
on idle machines. Nothing billed is kept only in memory: the ledger is written first.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from typing import Any

from .config import AgentConfig, MachineConfig
from .control import AgentControl, RunningJob, figures_of
from .firmware.profile import load_profile
from .ledger import JobClock, Ledger
from .machine.worker import JobResult, Machine, MachineEvent
from .spool import AnalysisPool, sweep

log = logging.getLogger("afn_agent")
DISPATCH_EVERY_S = 0.25
SPOOL_SWEEP_S = 60.0  # files of ended jobs past their retention leave the spool
MANAGER_ACTORS = ("manager", "admin")
STUCK_S = 15.0  # a machine thread that has not turned for this long is stuck: stop feeding the watchdog
PUBLISHED_EVENTS = {  # machine events that go on the events topic (through the outbox: never lost)
    "fault", "alarm", "emergency-stop", "link-lost", "firmware-reset", "door-open", "warning", "action",
    "stall", "stall-cleared", "safe-state", "script",
}  # fmt: skip
ALARMS = ("fault", "alarm", "link-lost", "door-open", "stall", "interlock-open")
STATUS_EVENTS = {"state", "job-finished", "heating", "fault", "alarm", "link-lost", "door-open"}


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


def open_ledger(config: AgentConfig) -> Ledger:
    """The agent's ledger, created if new, with its configured machines recorded."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(config.ledger_path, config.site)
    for m in config.machines:
        ledger.upsert_machine(m.id, m.machine_class, m.profile)
    return ledger


class Agent(AgentControl):
    """One agent process: every configured machine, one ledger, optionally a bus."""

    def __init__(self, config: AgentConfig, machines: dict[str, Machine] | None = None) -> None:
        self.config = config
        self.ledger = open_ledger(config)
        self.events: queue.Queue[MachineEvent] = queue.Queue()
        self.machines: dict[str, Machine] = machines or {}
        self.running: dict[str, RunningJob] = {}
        self.bus: Any = None
        self.api: Any = None
        self.analyses = AnalysisPool()  # uploads are analysed in another process
        self.alarms: dict[str, list[dict[str, Any]]] = {}
        self.access: Any = None
        self.guards: Any = None
        self.stuck_s = STUCK_S
        self.ledger_error = ""
        if config.access is not None:
            from .access.service import Access

            self.access = Access(config, self.ledger, self._access_event)
        self._stop = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._lock = threading.RLock()

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self) -> Agent:
        """Close what a crash left open, then start the machines and the pump."""
        recovered = {r["machine"]["id"] for r in self.recover()}
        for m in self.config.machines:
            if m.id not in self.machines:
                self.machines[m.id] = self._make_machine(m)
            self.machines[m.id].events = self.events
            if m.id in recovered:  # before anything else, as soon as the firmware answers
                self.machines[m.id].safe_state("recovery: a job was running when the agent stopped")
            self.machines[m.id].start()
        from .safety import Guards

        self.guards = Guards(self)
        if self.access is not None:
            self.access.start()
        if self.config.broker is not None:
            from .bus.client import Bus

            self.bus = Bus(
                self.config.broker, self.config.site, self.config.agent_id, self.ledger,
                list(self.machines), self.status, self.command,
            )  # fmt: skip
            self.bus.machine_classes = {m.id: m.machine_class for m in self.config.machines}
            if self.access is not None:
                self.bus.on_directory = self.access.on_directory
            self.bus.start()
        from .systemd import Watchdog

        self.watchdog = Watchdog(self.healthy)
        self._pump_thread = threading.Thread(target=self._pump, name="agent-pump", daemon=True)
        self._pump_thread.start()
        if self.config.api is not None:
            from .api.app import ApiServer

            self.api = ApiServer(self).start()
        return self

    def stop(self, reason: str = "agent stopped") -> None:
        """Stop taking jobs; a job still running is closed as interrupted (billed by the policy)."""
        self._stop.set()
        if self.api is not None:
            self.api.stop()
        self.analyses.close()
        if self._pump_thread:
            self._pump_thread.join(5)
        if self.access is not None:
            self.access.stop()
        for m in self.machines.values():
            m.close()
        with self._lock:
            self._last_events(time.monotonic())
            for machine_id in list(self.running):
                self._interrupt(machine_id, reason, time.monotonic())
                self.ledger.set_machine(machine_id, needs_confirmation="interrupted")
        if self.bus is not None:
            self.bus.wake()
            time.sleep(0.2)  # let the pump hand the last records to the broker; the outbox keeps them anyway
            self.bus.stop()
        self.ledger.close()

    def _make_machine(self, m: MachineConfig) -> Machine:
        return Machine(m.id, load_profile(m.profile), m.port, m.baud, events=self.events)

    def recover(self) -> list[dict[str, Any]]:
        """Jobs the ledger shows on a machine when the agent starts were cut off by a crash or power
        loss: close each as interrupted, billed up to its last checkpoint, once."""
        records = []
        for job in self.ledger.live_jobs():
            m = self._machine_config(job["machine_id"])
            figures = _checkpoint_figures(job)
            record = self.ledger.finish(
                job["id"],
                "interrupted",
                "offline",
                f"agent stopped while the job ran; billed to its last checkpoint ({job['checkpoint_at']})",
                figures,
                self.config.tariffs[m.tariff] if m else self.config.tariffs["default"],
                m.machine_class if m else "unknown",
                replayed=True,
            )
            self.ledger.audit(
                "agent",
                "job-interrupted",
                "closed",
                job["machine_id"],
                job["id"],
                record_id=record["record_id"],
            )
            self.ledger.set_machine(job["machine_id"], needs_confirmation="crash-recovery")
            data = {"job_id": job["id"], "safe_state": "requested", "needs_confirmation": "crash-recovery"}
            self.publish_event(job["machine_id"], "recovery", data)
            records.append(record)
            log.warning("job %s on %s closed as interrupted after a restart", job["id"], job["machine_id"])
        return records

    def _machine_config(self, machine_id: str) -> MachineConfig | None:
        return next((m for m in self.config.machines if m.id == machine_id), None)

    # ---- the pump ---------------------------------------------------------------------------------
    def _pump(self) -> None:
        """One event at a time, ledger first. A ledger that cannot be written (disk full, I/O error) keeps
        the event for a retry with its own time: nothing is billed from memory, nothing is dropped."""
        ticks = {"dispatch": 0.0, "idle": 0.0, "spool": 0.0}
        retry: deque[tuple[MachineEvent, float]] = deque()
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
        with self._lock:
            if event is not None:
                self._handle(event, now)
            self._checkpoints(now)
            if now >= ticks["dispatch"]:
                ticks["dispatch"] = now + DISPATCH_EVERY_S
                self._dispatch(now)
            if now >= ticks["spool"]:
                ticks["spool"] = now + SPOOL_SWEEP_S
                sweep(self.config, self.ledger)
            if now >= ticks["idle"]:
                ticks["idle"] = now + 1.0
                if self.access is not None:
                    self.access.sessions.close_idle(set(self.running))
                self.guards.check(now)
            self.watchdog.maybe_ping(now)
        if event is not None:
            self._forward(event)

    def _forward(self, event: MachineEvent) -> None:
        """Events worth keeping go through the outbox; status and telemetry straight to the bus."""
        if event.kind in PUBLISHED_EVENTS:
            self.publish_event(event.machine, event.kind, event.data)
            if event.kind in ALARMS:
                self._remember_alarm(event.machine, event.kind, event.data, event.t)
        elif event.kind == "state" and event.data["state"] in ("idle", "printing"):
            self.alarms.pop(event.machine, None)
        if self.bus is not None:
            if event.kind in ("telemetry", "progress"):
                self.bus.telemetry(event.machine, self.telemetry(event.machine))
            if event.kind in STATUS_EVENTS:
                self.bus.status_changed(event.machine)

    def _remember_alarm(self, machine_id: str, kind: str, data: dict[str, Any], t: float) -> None:
        self.alarms.setdefault(machine_id, []).append({"type": kind, **data, "t": t})
        del self.alarms[machine_id][:-5]

    def raise_alarm(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        """An alarm the agent itself detected (an interlock): kept in the status, sent on events."""
        self._remember_alarm(machine_id, kind, data, time.time())
        self.publish_event(machine_id, kind, data)
        if self.bus is not None:
            self.bus.status_changed(machine_id)

    def publish_event(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        self.ledger.outbox_add(
            "event", machine_id, {"type": kind, "machine": machine_id, "t": time.time(), **data}
        )
        if self.bus is not None:
            self.bus.wake()

    def _handle(self, event: MachineEvent, now: float) -> None:
        run = self.running.get(event.machine)
        if run is None:
            return
        if event.kind == "progress":
            run.used = event.data
        elif event.kind == "first-line" and run.clock.state == "starting":
            self._move(event.machine, run, "heating" if self.machines[event.machine].heating else "running",
                       "first line answered", now)  # fmt: skip
        elif event.kind == "heating":
            self._move(event.machine, run, "heating" if event.data["on"] else "running", "heat wait", now)
        elif event.kind == "state":
            state = event.data["state"]
            if state == "paused":
                self._move(event.machine, run, "paused", "paused", now)
            elif state == "printing" and run.clock.state == "paused":
                heating = self.machines[event.machine].heating
                self._move(event.machine, run, "heating" if heating else "running", "resumed", now)
        elif event.kind == "job-finished":
            self._finish(event.machine, run, JobResult(**event.data), now)

    def _move(self, machine_id: str, run: RunningJob, state: str, cause: str, now: float) -> None:
        if run.clock.state == state:
            return
        if run.clock.state == "paused" and cause == "heat wait":
            return  # a paused job stays paused whatever the heaters do
        self.ledger.transition(run.job_id, state, cause)
        run.clock.move(state, now)
        if state == "paused" or cause == "resumed":
            self.publish_event(machine_id, "job-" + cause, {"job_id": run.job_id})

    def _checkpoints(self, now: float) -> None:
        for run in self.running.values():
            if now - run.last_checkpoint >= self.config.checkpoint_s:
                run.last_checkpoint = now
                self.ledger.checkpoint(run.job_id, figures_of(run, now))

    def _dispatch(self, now: float) -> None:
        """Start the next queued job on every idle machine that has none running."""
        for machine_id, machine in self.machines.items():
            if machine_id in self.running or machine.state != "idle" or self._blocked(machine_id):
                continue
            if self.guards.blocked(machine_id):
                continue
            if self.access is not None:
                self.access.sessions.release_held(machine_id)
            job = self._next_startable(machine_id)
            if job is None:
                continue
            self.ledger.transition(job["id"], "starting", "dispatched to an idle machine")
            self.running[machine_id] = RunningJob(job["id"], JobClock("starting", now), last_checkpoint=now)
            self.ledger.checkpoint(job["id"], figures_of(self.running[machine_id], now))
            machine.start_job(job["path"])
            self.ledger.audit("agent", "job-start", "started", machine_id, job["id"], member=job["member_id"])
            self.publish_event(
                machine_id, "job-started",
                {"job_id": job["id"], "name": job["name"], "member_id": job["member_id"]},
            )  # fmt: skip
            log.info("job %s started on %s", job["id"], machine_id)

    def _next_startable(self, machine_id: str) -> dict[str, Any] | None:
        """The first queued job that may start now. One that may not (its owner's session ended: it was
        released outside it, or Start was pressed before a bed-clear confirmation and then the member
        left) goes back to held, waiting for its owner's badge, and is reported: it must not block the
        queue behind it."""
        for job in self.ledger.jobs(machine_id, ("queued",)):  # next first
            if self.access is None or self.access.sessions.may_start(machine_id, job):
                return job
            why = "its owner is not in a session at the machine; held until their badge"
            self.ledger.transition(job["id"], "held", why)
            self.ledger.audit(
                "agent", "job-hold", "held", machine_id, job["id"], member=job["member_id"], reason=why
            )
            self.publish_event(machine_id, "job-held", {"job_id": job["id"], "member_id": job["member_id"],
                                                         "reason": why})  # fmt: skip
            log.info("job %s on %s back to held: %s", job["id"], machine_id, why)
        return None

    def _finish(self, machine_id: str, run: RunningJob, result: JobResult, now: float) -> None:
        outcome, stop_type = stop_type_for(result, run.cancelled_by or result.reason)
        if result.outcome == "completed" and run.clock.state == "starting":
            run.clock.move("running", now)  # a job too short to report: its time was streaming
        run.used = result.used or run.used
        m = self._machine_config(machine_id)
        record = self.ledger.finish(
            run.job_id,
            outcome,
            stop_type,
            result.reason,
            figures_of(run, now, m.material if m else "filament"),
            self.config.tariffs[m.tariff] if m else self.config.tariffs["default"],
            m.machine_class if m else "unknown",
        )
        del self.running[machine_id]
        if self.config.spool.keep_h == 0:
            sweep(self.config, self.ledger)  # its file goes as the job ends
        self.publish_event(machine_id, "job-" + outcome, _record_summary(record))
        self._apply_pending_lock(machine_id)
        if m and m.confirm_clear and outcome == "completed":
            self.ledger.set_machine(machine_id, needs_confirmation="bed-clear")
        if self.access is not None:
            self.access.sessions.touch(machine_id)
        self.guards.touch(machine_id)

    def _last_events(self, now: float) -> None:
        """What the machine threads said after the pump stopped: a job that ended, and each closed
        job's last figures (lines answered up to the close). A stopped agent once billed 328 lines of a
        job whose firmware had answered 739."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if event.kind in ("progress", "job-finished"):
                self._handle(event, now)

    def _interrupt(self, machine_id: str, reason: str, now: float) -> None:
        run = self.running.pop(machine_id)
        m = self._machine_config(machine_id)
        self.ledger.finish(
            run.job_id,
            "interrupted",
            "offline",
            reason,
            figures_of(run, now, m.material if m else "filament"),
            self.config.tariffs[m.tariff] if m else self.config.tariffs["default"],
            m.machine_class if m else "unknown",
        )

    def healthy(self) -> bool:
        """Every machine thread alive and turning: what feeds the systemd watchdog."""
        now = time.monotonic()
        return all(m.is_alive() and now - m.heartbeat < self.stuck_s for m in self.machines.values())

    def wait_idle(self, machine_id: str, timeout: float) -> bool:
        """Until the machine has no job queued or running (tests and the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = machine_id in self.running or self.ledger.next_queued(machine_id) is not None
            if not busy:
                return True
            time.sleep(0.05)
        return False


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


def _checkpoint_figures(job: dict[str, Any]) -> dict[str, Any]:
    return json.loads(job["checkpoint_json"]) if job["checkpoint_json"] else {}
