"""The agent: machines, ledger, pump, control, guards, access, bus and API wired together.

Each part owns its facts: the machine threads their ports and jobs on the wire, the pump the jobs in
the ledger and the alarms, the ledger everything billed. This module only builds them in order,
starts them, and stops them so that nothing running is lost.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from .access.service import Access
from .config import AgentConfig, MachineConfig
from .control import Control
from .firmware.profile import load_profile
from .intake import AnalysisPool
from .ledger import Ledger
from .ledger.keys import KeyBook
from .machine.events import MachineEvent
from .machine.worker import Machine
from .publisher import Publisher
from .pump import JobPump
from .safety import Guards
from .systemd import Watchdog

log = logging.getLogger("afn_agent")
STUCK_S = 15.0  # a machine thread that has not turned for this long is stuck: stop feeding the watchdog


def open_ledger(config: AgentConfig) -> Ledger:
    """The agent's ledger, created if new, with its configured machines recorded."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(config.ledger_path, config.site)
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
        self.pump = JobPump(
            config, self.ledger, self.machines, self.events, self.publisher,
            self.access.sessions if self.access else None, self._telemetry,
        )  # fmt: skip
        self.control = Control(config, self.ledger, self.machines, self.pump, self.publisher, self.access)
        self.guards = Guards(config, self.machines, self.pump, self.publisher, self.ledger, self.access,
                             self.control.cancel)  # fmt: skip
        self.pump.guards = self.guards
        self.bus: Any = None
        self.api: Any = None
        self.stuck_s = STUCK_S
        self.watchdog = Watchdog(self.healthy)
        self.pump.on_turn = self.watchdog.maybe_ping

    @property
    def ledger_error(self) -> str:
        return self.pump.ledger_error

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self) -> Agent:
        """Close what a crash left open, then start the machines, the pump, the bus and the API."""
        recovered = {r["machine"]["id"] for r in self.pump.recover()}
        for m in self.config.machines:
            if m.id not in self.machines:
                self.machines[m.id] = self._make_machine(m)
            self.machines[m.id].events = self.events
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
            self.bus.machine_classes = {m.id: m.machine_class for m in self.config.machines}
            if self.access is not None:
                self.bus.on_directory = self.access.on_directory
            self.publisher.bus = self.bus
            self.bus.start()
        self.pump.start()
        if self.config.api is not None:
            from .api.server import ApiServer

            self.api = ApiServer(self).start()
        return self

    def stop(self, reason: str = "agent stopped") -> None:
        """Stop taking jobs; a job still running is closed as interrupted (billed by the policy)."""
        self.pump.stop()  # first: no job starts from here on
        if self.api is not None:
            self.api.stop()
        self.analyses.close()
        if self.access is not None:
            self.access.stop()
        for m in self.machines.values():
            m.close()
        self.pump.close_interrupted(reason)
        if self.bus is not None:
            self.bus.wake()
            time.sleep(0.2)  # let the bus hand the last records to the broker; the outbox keeps them anyway
            self.bus.stop()
        self.ledger.close()

    def _make_machine(self, m: MachineConfig) -> Machine:
        return Machine(m.id, load_profile(m.profile), m.port, m.baud, events=self.events)

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
        return all(m.is_alive() and now - m.heartbeat < self.stuck_s for m in self.machines.values())

    def wait_idle(self, machine_id: str, timeout: float) -> bool:
        """Until the machine has no job queued or running (tests and the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pump.busy(machine_id):
                return True
            time.sleep(0.05)
        return False
