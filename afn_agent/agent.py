"""The agent: machines, ledger, pump, control, guards, access, bus and API wired together.

Each part owns its facts: the machine threads their ports and jobs on the wire, the pump the jobs in
the ledger and the alarms, the ledger everything billed. This module only builds them in order,
starts them, and stops them so that nothing running is lost.
"""

from __future__ import annotations

import logging
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from .access.service import Access
from .api.announce import Announcer
from .bus.discovery import Discovery
from .bus.discovery import Machine as HaMachine
from .bus.topics import Topics
from .camera import Cameras
from .config import ANY_HOST, AgentConfig, MachineConfig
from .console_service import Console
from .control import Control
from .firmware.profile import load_profile
from .intake import AnalysisPool
from .ledger import Ledger, LedgerError
from .ledger.keys import KeyBook
from .ledger.snapshots import Snapshots
from .machine.events import JOB_STATES, MachineEvent, MachineState
from .machine.power_only import PowerOnlyMachine
from .machine.worker import Machine
from .notify import Notifier
from .power.keeper import PowerKeeper
from .power.plug import Plug
from .power.switches import DeadSwitch, Switch, Unreachable, make_switch
from .power.tasmota import TasmotaLink
from .publisher import Publisher
from .pump import JobPump
from .safety import Guards
from .systemd import Watchdog

log = logging.getLogger("afn_agent")
STUCK_S = 15.0  # a machine thread that has not turned for this long is stuck: stop feeding the watchdog


def open_ledger(config: AgentConfig) -> Ledger:
    """The agent's ledger, created if new, with its configured machines recorded. A file that cannot be
    opened at all (a directory in its place, no permission) is a LedgerError naming it, like a damaged one."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(config.ledger_path, config.site)
        mode, bus = config.booking.mode, config.broker is not None
        ledger.usage_outbox = "usage" if mode == "mqtt" else "usage-copy" if bus else None
    except (OSError, sqlite3.Error) as exc:
        raise LedgerError(f"{config.ledger_path}: the ledger cannot be opened ({exc}); check the file and "
                          f"[agent].data_dir") from None  # fmt: skip
    for m in config.machines:
        ledger.upsert_machine(m.id, m.machine_class, m.profile)
    return ledger


class Agent:
    """One agent process: every configured machine, one ledger, optionally a bus and an API."""

    def __init__(self, config: AgentConfig, machines: dict[str, Machine] | None = None) -> None:
        self.config = config
        self.ledger = open_ledger(config)
        self.events: queue.Queue[MachineEvent] = queue.Queue()
        self.machines: dict[str, Machine] = machines or {}
        self.publisher = Publisher(self.ledger)
        self.keys = KeyBook(self.ledger)  # API keys added while running (members' own, the CLI's)
        self.analyses = AnalysisPool()  # uploads are analysed in another process
        self.access: Access | None = None
        if config.access is not None:
            self.access = Access(config, self.ledger, self._access_event)
        self.notifier = self._notifier(config)
        self.cameras = self._cameras(config)
        self.announcer: Announcer | None = None  # slicers' Browse (mDNS), once the API listens
        self.pump = JobPump(
            config, self.ledger, self.machines, self.events, self.publisher,
            self.access.sessions if self.access else None, self._telemetry,
        )  # fmt: skip
        self.control = Control(config, self.ledger, self.machines, self.pump, self.publisher, self.access)
        self.console = Console(self)  # the machine console's actions (jog, zero, probe, preheat …)
        self.guards = Guards(config, self.machines, self.pump, self.publisher, self.ledger, self.access,
                             self.control.cancel)  # fmt: skip
        self.pump.guards = self.guards
        self.plugs: dict[str, Plug] = {}  # one per machine with a power switch, built at start
        self.tasmota: TasmotaLink | None = None
        self.power = PowerKeeper(config, self.plugs, self.machines, self.pump,
                                 self.access.sessions if self.access else None, self.ledger)  # fmt: skip
        self.pump.power = self.control.power = self.power
        if self.access is not None:
            self.access.sessions.unavailable = self.power.blocked
        self.bus: Any = None
        self.api: Any = None
        self.stuck_s = STUCK_S
        self.watchdog = Watchdog(self.healthy)
        self.pump.on_turn = self.watchdog.maybe_ping
        self.pump.on_second = self._restart_idle_machines
        self._reload_lock = threading.Lock()
        self._waiting: dict[str, MachineConfig] = {}  # machines whose thread restarts once idle

    def _notifier(self, config: AgentConfig) -> Notifier | None:
        """Members and managers hear of jobs and alarms (Apprise); the notifier listens to every event."""
        if config.notify is None:
            return None

        def nobody(member_id: str) -> tuple[list[str], str | None]:
            return [], None

        reach = self.access.directory.reach if self.access is not None else nobody
        awaited = config.booking.mode != "none"  # a lab without a booking system has no backlog
        notifier = Notifier(config.notify, reach, self.ledger.undelivered if awaited else lambda: 0,
                            config.agent_id)  # fmt: skip
        self.publisher.listeners.append(notifier.offer)
        return notifier

    def _cameras(self, config: AgentConfig) -> Cameras | None:
        """Pictures of jobs where a machine has a camera; they listen to every event, as the notifier."""
        settings = {m.id: m.camera for m in config.machines if m.camera is not None}
        if not settings:
            return None
        cameras = Cameras(settings, config.data_dir, Snapshots(self.ledger), self.publisher.event,
                          self.publisher.picture, lambda m: self.pump.job_id(m))  # fmt: skip
        self.publisher.listeners.append(cameras.on_event)
        return cameras

    @property
    def ledger_error(self) -> str:
        return self.pump.ledger_error

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self) -> Agent:
        """Close what a crash left open, then start the machines, the pump, the bus and the API."""
        if self.notifier is not None:
            self.notifier.start()
        if self.cameras is not None:
            self.cameras.start()
        recovered = {r["machine"]["id"] for r in self.pump.recover()}
        for m in self.config.machines:
            if m.id not in self.machines:
                self.machines[m.id] = self._make_machine(m)
            self.machines[m.id].events = self.events
            self.machines[m.id].settings = m.console
            if m.id in recovered:  # before anything else, as soon as the firmware answers
                self.machines[m.id].safe_state("recovery: a job was running when the agent stopped")
            self.machines[m.id].start()
        if self.access is not None:
            self.access.start()
        if self.config.broker is not None:
            from .bus.client import Bus

            self.bus = Bus(
                self.config.broker, self.config.site, self.config.agent_id, self.ledger,
                list(self.machines), self.control.status, self.control.command,
            )  # fmt: skip
            if self.config.broker.home_assistant:
                self.bus.discovery = self._discovery()
            if self.access is not None:
                self.bus.on_directory = self.access.on_directory
            self.publisher.bus = self.bus
            self.tasmota = TasmotaLink(self.bus)  # Tasmota plugs ride on the agent's one connection
            self.bus.start()
        for m in self.config.machines:
            if m.power:
                self.plugs[m.id] = self._make_plug(m).start()
        self.pump.start()
        if self.config.api is not None:
            from .api.octoprint import OCTOPRINT_VERSION
            from .api.server import ApiServer

            self.api = ApiServer(self).start()
            if self.config.api.announce:
                self.announcer = Announcer(
                    self.config.site, self.config.agent_id, list(self.machines), self.config.api.host,
                    self.api.port, list(self.config.api.announce_on), OCTOPRINT_VERSION,
                ).start()  # fmt: skip
        return self

    def stop(self, reason: str = "agent stopped", grace_s: float = 0.0) -> None:
        """Stop taking jobs; wait up to `grace_s` for the running ones to end. A job still running then
        ends as a crash would end it: interrupted (billed by the offline policy), `job-interrupted`
        published, the machine brought to its safe state and marked as needing a person's confirmation."""
        self.pump.draining = True  # first: no job starts from here on
        if grace_s > 0 and self.pump.running_ids():
            self._wait_jobs(grace_s, "stop requested")
        if self.pump.is_alive() and (
            cut := self.pump.interrupt(f"{reason}: its grace of {grace_s:g} s was over")
        ):
            self._interrupt(cut, reason)
        self.pump.stop()
        if self.announcer is not None:
            self.announcer.close()
        if self.api is not None:
            self.api.stop()
        self.analyses.close()
        if self.access is not None:
            self.access.stop()
        for m in self.machines.values():
            m.close()
        for plug in self.plugs.values():
            plug.close()  # the relays stay as they are: a stopped agent cuts nothing
        if self.tasmota is not None:
            self.tasmota.close()
        self.pump.close_interrupted(reason)
        if self.bus is not None:
            self.bus.wake()
            time.sleep(0.2)  # let the bus hand the last records to the broker; the outbox keeps them anyway
            self.bus.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.cameras is not None:
            self.cameras.stop()
        self.ledger.close()

    def _wait_jobs(self, grace_s: float, why: str) -> bool:
        """Until no job runs or `grace_s` is over, telling systemd what it waits for."""
        from .systemd import notify

        deadline = time.monotonic() + grace_s
        while (running := self.pump.running_ids()) and time.monotonic() < deadline:
            left = deadline - time.monotonic()
            notify(f"STATUS={why}: waiting up to {left:.0f} s for {', '.join(sorted(running))} to finish")
            log.info("%s: %d job(s) running, waiting up to %.0f s", why, len(running), left)
            time.sleep(min(1.0, max(left, 0.01)))  # real time: the jobs run at the machines' pace
        return not self.pump.running_ids()

    def _interrupt(self, machine_ids: list[str], reason: str) -> None:
        """Jobs past the stop's grace: streaming stops, the pump records each as interrupted when its
        machine reports the end, then each machine takes its safe state (heaters, spindle, laser off).
        A machine that is not connected cannot answer: nothing is waited for from it (its job is closed
        with the others, its safe state taken at the next start, as after a crash)."""
        for machine_id in machine_ids:
            log.warning(
                "stop: the job on %s did not end within the grace; ending it as interrupted", machine_id
            )
            self.machines[machine_id].cancel("agent-stop")
        self._until(lambda: not self.pump.running_ids() & self._answering(machine_ids), 10.0)
        for machine_id in machine_ids:
            self.machines[machine_id].safe_state(f"{reason}: its job was interrupted")
        self._until(
            lambda: all(self.machines[m].safe_state_taken() for m in self._answering(machine_ids)), 5.0
        )

    def _answering(self, machine_ids: list[str]) -> frozenset[str]:
        gone = (MachineState.DISCONNECTED, MachineState.CONNECTING, MachineState.FAULT)
        return frozenset(m for m in machine_ids if self.machines[m].state not in gone)

    @staticmethod
    def _until(done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)  # real time: the machine threads answer at their own pace

    # ---- reload -----------------------------------------------------------------------------------
    def reload(self, actor: str = "signal") -> dict[str, Any]:
        """Read the configuration file again and apply it without touching running jobs (see reload.py).
        A file that does not load changes nothing; the error names the file and key."""
        from .config import ConfigError, load_config
        from .errors import InvalidInput
        from .reload import plan

        with self._reload_lock:
            try:
                fresh = load_config(self.config.path)
            except ConfigError as exc:
                self.ledger.audit(actor, "reload", "refused", None, None, error=str(exc))
                log.error("reload refused, nothing changed: %s", exc)
                raise InvalidInput(str(exc), code="config-invalid") from None
            changes = plan(self.config, fresh, {mid: m.profile for mid, m in self.machines.items()})
            self._hand_out(changes.config)
            self._waiting = {mid: changes.config.machine(mid) for mid in changes.when_idle}
            self.pump.held_back = frozenset(self._waiting)
            report = changes.report()
            self.ledger.audit(actor, "reload", "applied", None, None, **report)
            for machine_id, what in changes.when_idle.items():
                self.publisher.event(machine_id, "reconfigure-pending", {"changes": what, "when": "idle"})
        if self.access is not None and self.config.access is not None and self.config.access.sync_url:
            threading.Thread(target=self.access.sync_now, name="reload-sync", daemon=True).start()
        log.info("configuration reloaded: %s", report)
        return report

    def _hand_out(self, config: AgentConfig) -> None:
        """Every part reads the new configuration from here on (one object, swapped whole)."""
        for m in config.machines:  # a machine's class (trainings are per class), as the ledger shows it
            if (was := self.config.find(m.id)) is not None and was.machine_class != m.machine_class:
                self.ledger.upsert_machine(m.id, m.machine_class, was.profile)
        self.config = self.pump.config = self.control.config = self.guards.config = self.power.config = config
        for m in config.machines:
            if m.id in self.machines:
                self.machines[m.id].settings = m.console
        if self.access is not None and config.access is not None:
            self.access.reconfigure(config)
        if self.api is not None and config.api is not None:
            self.api.auth.config = config.api

    def _restart_idle_machines(self) -> None:
        """On the pump's thread, once a second: a machine waiting for a new thread gets it when it has
        no job (no job can start there meanwhile: `held_back`)."""
        for machine_id, m in list(self._waiting.items()):
            old = self.machines[machine_id]
            if self.pump.job_id(machine_id) is not None or old.state in JOB_STATES:
                continue
            old.close()
            if (plug := self.plugs.get(machine_id)) is not None:
                plug.close()
            if m.power:
                self.plugs[machine_id] = self._make_plug(m).start()
            elif plug is not None:
                del self.plugs[machine_id]
            self.ledger.upsert_machine(m.id, m.machine_class, m.profile)
            self.guards.set_interlock(m.id, m.interlock)
            fresh = self._make_machine(m)
            fresh.settings = m.console
            self.machines[machine_id] = fresh  # the same key: readers iterating the dict are not upset
            fresh.start()
            del self._waiting[machine_id]
            self.pump.held_back = frozenset(self._waiting)
            self.ledger.audit("agent", "reconfigure", "restarted", machine_id, profile=m.profile, port=m.port)
            self.publisher.event(machine_id, "reconfigured", {"profile": m.profile, "port": m.port})
            log.info("%s: new machine thread with its reloaded settings", machine_id)

    def _make_machine(self, m: MachineConfig) -> Machine:
        profile = load_profile(m.profile)
        if not profile.streamed:
            return PowerOnlyMachine(m.id, profile, self.events)
        return Machine(m.id, profile, m.port, m.baud, events=self.events)

    def _make_plug(self, m: MachineConfig) -> Plug:
        """The machine's power switch and its thread; a switch that cannot be opened is an unreachable one
        (its alarm says why), never a reason not to start."""
        assert m.power is not None
        switch, extraction = self._switch(m.power), self._switch(m.extraction) if m.extraction else None
        return Plug(m.id, switch, self.events, m.power_safe, m.power_poll_s, extraction)

    def _switch(self, spec: str) -> Switch:
        try:
            return make_switch(spec, self.tasmota)
        except Unreachable as exc:
            return DeadSwitch(str(exc))

    def _discovery(self) -> Discovery:
        """Home Assistant's view of the machines; each device links to its page on this agent."""
        api = self.config.api
        base = None
        if api is not None and api.port:
            host = socket.gethostname() if api.host in ANY_HOST else api.host
            base = f"http://{f'[{host}]' if ':' in host else host}:{api.port}"
        machines = [
            HaMachine(m.id, m.machine_class, self.machines[m.id].profile.kind,
                      f"{base}/kiosk/{m.id}" if base else None)
            for m in self.config.machines
        ]  # fmt: skip
        broker = self.config.broker
        buttons = broker is not None and broker.home_assistant_buttons
        return Discovery(Topics(broker.topic_prefix if broker else "afn/v1", self.config.site),
                         self.config.agent_id, machines, buttons)  # fmt: skip

    def _access_event(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        if machine_id == "_directory":  # not a machine's: the audit log keeps it
            self.ledger.audit("agent", kind, data.get("reason", "ok"), None, None, **data)
            return
        self.publisher.event(machine_id, kind, data)

    def _telemetry(self, machine_id: str) -> dict[str, Any]:
        return self.control.telemetry(machine_id)

    def healthy(self) -> bool:
        """Every machine thread alive and turning: what feeds the systemd watchdog."""
        now = time.monotonic()
        machines = all(m.is_alive() and now - m.heartbeat < self.stuck_s for m in self.machines.values())
        return machines and all(p.is_alive() for p in list(self.plugs.values()))

    def wait_idle(self, machine_id: str, timeout: float) -> bool:
        """Until the machine has no job queued or running (tests, the demo, benchmarks)."""
        return self.pump.wait_idle(machine_id, timeout)
