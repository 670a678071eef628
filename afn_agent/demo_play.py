"""`afn-agent demo --keep`: the demo lab keeps living after its scripted afternoon, so that whoever opens a
kiosk or the fleet dashboard sees it move: members badge in, a job runs, they badge out; now and then one
cancels, or the laser's lid is opened mid-job (an alarm that a manager clears a little later).

The first demo played its afternoon in 40 s and then sat idle: by the time a visitor opened a page,
nothing moved.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from .demo import UID, Lab
from .machine.events import MachineState

# who comes to which machine (each trained for it: the demo's directory)
REGULARS = {"printer-1": ("ana", "lea", "tom"), "printer-2": ("lea", "tom"), "mill-1": ("tom",),
            "laser-1": ("ana", "lea")}  # fmt: skip
TICK_S = 0.5


@dataclass
class Visit:
    """One member at one machine: badged in, their job, and what happens next."""

    member: str
    job_id: str
    since: float
    cancel_at: float | None = None  # progress at which they change their mind
    lid_at: float | None = None  # progress at which the laser's lid is opened
    lid_opened: float = 0.0


class Play:
    """Drives the lab from the outside, as people would: the agents' own APIs, nothing behind them."""

    def __init__(self, lab: Lab, seed: int | None = None) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.visits: dict[str, Visit] = {}
        self.rest_until: dict[str, float] = {}
        self.jobs = 0
        # lines per job: at the normal pace a job lasts long enough (30-90 s) to be seen running
        self.lines = (400, 1200) if lab.fast else (5000, 15000)

    def run(self, seconds: float) -> None:
        """Until `seconds` have passed (inf: until Ctrl-C)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for machine in REGULARS:
                self._turn(machine, time.monotonic())
            time.sleep(TICK_S)

    def _turn(self, machine: str, now: float) -> None:
        agent = self.lab.agent_of(machine)
        state = agent.machines[machine].state
        visit = self.visits.get(machine)
        if visit is None:
            if now < self.rest_until.get(machine, 0.0):
                return
            if state == MachineState.IDLE:
                self._leave_open_session(machine)
                self._arrive(machine, now)
            elif state == MachineState.FAULT:  # the printer that runs away: a manager sees to it
                self.lab.say(f"  a manager repairs {machine}, resets it, clears its alarm and reconnects it")
                self.lab.reset(machine)
                agent.control.clear_alarms(machine, "manager")
                agent.machines[machine].reconnect()
                agent.control.confirm(machine, "manager")
                self.rest_until[machine] = now + 10
            return
        job = agent.ledger.job(visit.job_id)
        if job is not None and job["state"] in ("completed", "cancelled", "failed", "interrupted"):
            self.lab.badge(machine, visit.member)  # badge out
            del self.visits[machine]
            self.rest_until[machine] = now + self.rng.uniform(3, 10)
            return
        progress = agent.machines[machine].snapshot().get("progress") or 0.0
        if visit.cancel_at is not None and progress >= visit.cancel_at:
            visit.cancel_at = None
            self.lab.say(f"  {visit.member} cancels the job on {machine}")
            agent.control.cancel(machine, visit.member)
        if visit.lid_at is not None and progress >= visit.lid_at:
            visit.lid_at, visit.lid_opened = None, now
            self.lab.say(f"  someone opens {machine}'s lid")
            agent.pump.raise_alarm(machine, "interlock-open", {"reason": "lid opened during the job"})
        if visit.lid_opened and now - visit.lid_opened > 8:
            visit.lid_opened = 0.0
            agent.control.clear_alarms(machine, "manager")
            self.lab.say(f"  a manager checks {machine} and clears its alarm")

    def _leave_open_session(self, machine: str) -> None:
        """Whoever the scripted afternoon left badged in at an idle machine badges out first: otherwise the
        next card would be refused (machine in use) or would close their session."""
        agent = self.lab.agent_of(machine)
        if agent.access is None:
            return
        session = agent.access.sessions.current(machine)
        if session is None:
            return
        if session["member_id"] in UID:
            self.lab.badge(machine, session["member_id"])
        if agent.access.sessions.current(machine) is not None:
            agent.access.sessions.close(machine, "demo")

    def _arrive(self, machine: str, now: float) -> None:
        member = self.rng.choice(REGULARS[machine])
        self.jobs += 1
        name = f"{member}-{self.jobs}.{'gcode' if machine.startswith('printer') else 'nc'}"
        heat = {"heat": (205, 60)} if machine.startswith("printer") else {}
        job_id = self.lab.job(machine, member, name, self.rng.randint(*self.lines), **heat)
        visit = Visit(member, job_id, now)
        if self.rng.random() < 0.15:
            visit.cancel_at = self.rng.uniform(0.2, 0.6)
        if machine == "laser-1" and self.rng.random() < 0.35:
            visit.lid_at = self.rng.uniform(0.2, 0.5)
        decision = self.lab.badge(machine, member)
        if decision["code"] != "allowed":  # the card was refused: the held job must not wait forever
            self.lab.agent_of(machine).control.remove_job(job_id, "manager")
            self.rest_until[machine] = now + 5
            return
        self.visits[machine] = visit
