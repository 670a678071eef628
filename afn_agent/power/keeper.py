"""The power rules applied once a second, on the pump's thread: for each powered machine, what is
happening there (job, session, queue, hotend temperature, time since use) becomes what its plug should
do. Each change of mind is audited with its reason; the plug thread switches and reports."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ..access.sessions import Sessions
from ..config import AgentConfig
from ..ledger import Ledger
from ..machine.worker import Machine
from .plug import Plug
from .rules import Decision, Facts, Rule, decide


class JobsFacts(Protocol):
    def running_ids(self) -> frozenset[str]: ...
    def busy(self, machine_id: str) -> bool: ...


class PowerKeeper:
    def __init__(
        self,
        config: AgentConfig,
        plugs: Mapping[str, Plug],
        machines: Mapping[str, Machine],
        jobs: JobsFacts,
        sessions: Sessions | None,
        ledger: Ledger,
    ) -> None:
        self.config, self.plugs, self.machines, self.jobs = config, plugs, machines, jobs
        self.sessions, self.ledger = sessions, ledger
        self._last_use: dict[str, float] = {}
        self._decided: dict[str, Decision] = {}

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        running = self.jobs.running_ids()
        for machine_id, plug in list(self.plugs.items()):
            facts = self._facts(machine_id, plug, machine_id in running, now)
            decision = decide(facts, self._rule(machine_id))
            before = self._decided.get(machine_id)
            if before is None or (before.power, before.extraction) != (decision.power, decision.extraction):
                self._decided[machine_id] = decision  # audited before the plug acts: the record leads
                self.ledger.audit("agent", "power", "on" if decision.power else "off", machine_id,
                                  reason=decision.reason, extraction=decision.extraction)  # fmt: skip
            plug.want(decision.power, decision.reason, decision.extraction)

    def _facts(self, machine_id: str, plug: Plug, job: bool, now: float) -> Facts:
        session = self.sessions is not None and self.sessions.current(machine_id) is not None
        waiting = not job and self.jobs.busy(machine_id)
        if job or session:
            self._last_use[machine_id] = now
        since = now - self._last_use[machine_id] if machine_id in self._last_use else math.inf
        machine = self.machines[machine_id]
        hotends = [actual for name, (actual, _) in machine.temperatures.items() if name.startswith("T")]
        return Facts(machine.profile.kind, job, session, waiting, since, bool(plug.on),
                     max(hotends) if hotends else None)  # fmt: skip

    def _rule(self, machine_id: str) -> Rule:
        m = self.config.machine(machine_id)
        return Rule(after_s=m.power_after_s, cool_c=m.power_cool_c, own_extraction=m.extraction is not None)

    def metered(self) -> dict[str, float]:
        """Power-only machines and their busy threshold (W): their sessions are billed from the plug."""
        only = [m for m in self.plugs if not self.machines[m].profile.streamed]
        return {m: self.config.machine(m).busy_w for m in only}

    def blocked(self, machine_id: str) -> str:
        """Why nothing may start there now: its switch does not answer and its safe side is closed."""
        plug = self.plugs.get(machine_id)
        if plug is None or plug.reachable or plug.safe_side != "closed":
            return ""
        return f"its power switch does not answer ({plug.problem}); the machine stays closed until it does"

    def status(self, machine_id: str) -> dict[str, Any] | None:
        """The power part of the machine's status (None: not under the agent's control)."""
        plug = self.plugs.get(machine_id)
        if plug is None:
            return None
        decided = self._decided.get(machine_id)
        return {
            "on": plug.on,
            "watts": plug.watts,
            "reachable": plug.reachable,
            "problem": plug.problem or None,
            "switch": plug.switch.kind,
            "safe_side": plug.safe_side,
            "reason": decided.reason if decided else None,
        }
