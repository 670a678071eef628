"""What a person's console action becomes: the machine's console settings filled in, the input checked
(axes, sizes, temperatures), the member's training for babysteps, the job to frame; then the action is
posted to the machine thread, whose answer (taken or refused, with the reason) comes back at once.

Who may act is the API's Gate (Act.CONSOLE); this module knows what, not who.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .errors import Conflict, InvalidInput, NotFound
from .i18n import Msg
from .machine.console import ConsoleAction, ConsoleRefused, Do, travel_problem
from .materials import loaded

if TYPE_CHECKING:
    from .agent import Agent
    from .machine.worker import Machine

ANSWER_S = 3.0  # the machine thread answers a console action at its next turn (100 ms); this is a ceiling
MAX_MOVE_MM = 1000.0
MAX_BABYSTEP_MM = 0.2


class MachineBusy(Conflict):
    code = "machine-not-answering"


class Console:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def act(self, machine_id: str, do: Do, body: dict[str, Any], actor: str) -> str:
        """Build the action, post it, and return what the machine said (ConsoleRefused with the reason)."""
        machine = self.agent.machines.get(machine_id)
        if machine is None:
            raise NotFound(f"no machine {machine_id!r}")
        action = self.build(machine_id, do, body, actor)
        try:
            return machine.console(action).result(ANSWER_S)
        except FutureTimeout:
            raise MachineBusy(f"{machine_id} did not answer within {ANSWER_S:g} s") from None

    def build(self, machine_id: str, do: Do, body: dict[str, Any], actor: str) -> ConsoleAction:
        s = self.agent.config.machine(machine_id).console
        if do is Do.JOG:
            axes = _axes(body, "axes", nonzero=True)
            only_z = set(axes) == {"Z"}
            return ConsoleAction(do, actor, axes=axes, feed=s.jog_feed_z if only_z else s.jog_feed,
                                 continuous=bool(body.get("continuous", False)))  # fmt: skip
        if do is Do.ZERO:
            return ConsoleAction(do, actor, axes=_axes(body, "axes"))
        if do in (Do.GO_TO_ZERO, Do.HOME, Do.JOG_STOP, Do.UNLOCK, Do.CONTINUE):
            return ConsoleAction(do, actor, safe_z=s.safe_z)
        if do is Do.PROBE:
            return ConsoleAction(do, actor, feed=s.probe_feed, depth_mm=s.probe_depth, plate_mm=s.plate_mm,
                                 retract_mm=s.retract_mm)  # fmt: skip
        if do is Do.FRAME:
            box = self._box(machine_id, body)
            return ConsoleAction(do, actor, box=box, feed=s.frame_feed, safe_z=s.safe_z, power=s.frame_power)
        if do is Do.PREHEAT:
            hotend, bed = self._temperatures(machine_id, body)
            return ConsoleAction(do, actor, hotend=hotend, bed=bed)
        if do is Do.COOLDOWN:
            return ConsoleAction(do, actor, hotend=0.0, bed=0.0)
        if do in (Do.LOAD, Do.UNLOAD):
            return ConsoleAction(do, actor, mm=s.filament_mm, feed=s.filament_feed, hotend=s.min_extrude_c)
        if do is Do.RAISE_Z:
            return ConsoleAction(do, actor, mm=s.raise_mm, feed=s.jog_feed_z)
        if do is Do.BABYSTEP:
            self._may_babystep(machine_id, s.babystep_training, s.babystep_until_layer_s)
            z = _number(body, "z", -MAX_BABYSTEP_MM, MAX_BABYSTEP_MM)
            return ConsoleAction(do, actor, mm=z)
        raise InvalidInput(f"unknown console action {do!r}")

    def _box(self, machine_id: str, body: dict[str, Any]) -> dict[str, tuple[float, float]]:
        """The X/Y box of the job to frame: the one named, else the session's next job at the machine."""
        job = self._job_to_frame(machine_id, body.get("job_id"))
        bounds = json.loads(job["estimate_json"] or "{}").get("bounds") or {}
        if "X" not in bounds or "Y" not in bounds:
            raise ConsoleRefused("no-bounds", job=job["id"])
        return {axis: (float(bounds[axis][0]), float(bounds[axis][1])) for axis in ("X", "Y")}

    def _job_to_frame(self, machine_id: str, job_id: Any) -> dict[str, Any]:
        if job_id is not None:
            job = self.agent.ledger.job(str(job_id))
            if job is None or job["machine_id"] != machine_id:
                raise NotFound(f"no job {job_id!r} at {machine_id}")
            return job
        access = self.agent.access
        session = access.sessions.current(machine_id) if access else None
        waiting = self.agent.ledger.jobs(machine_id, ("held", "queued"))
        mine = [j for j in waiting if session is None or j["member_id"] == session["member_id"]]
        if not mine:
            raise ConsoleRefused("nothing-to-frame")
        return mine[0]

    def _temperatures(self, machine_id: str, body: dict[str, Any]) -> tuple[float | None, float | None]:
        """From the body (°C; a heater it does not name keeps its target), else the middle of the loaded
        (or named) material's ranges."""
        profile = self.agent.machines[machine_id].profile
        top_hotend = profile.max_temp_c.get("hotend", 300.0)
        top_bed = profile.max_temp_c.get("bed", 120.0)
        if "hotend" in body or "bed" in body:
            hotend = _number(body, "hotend", 0.0, top_hotend) if "hotend" in body else None
            bed = _number(body, "bed", 0.0, top_bed) if "bed" in body else None
            return hotend, bed
        name = body.get("material")
        preset = self.agent.config.preset(str(name)) if name else loaded(self.agent.config, self.agent.ledger,
                                                                          machine_id)  # fmt: skip
        if preset is None or preset.nozzle_c is None:
            raise InvalidInput("no material with temperatures to preheat for: name one, or give hotend, bed")
        hotend = round(sum(preset.nozzle_c) / 2 / 5) * 5
        bed = round(sum(preset.bed_c) / 2 / 5) * 5 if preset.bed_c else 0.0
        return min(float(hotend), top_hotend), min(float(bed), top_bed)

    def _may_babystep(self, machine_id: str, training: str | None, until_s: float) -> None:
        """Babysteps are for the first layers, by members trained for them (when the machine says so)."""
        figures = self.agent.control.job_figures(machine_id)
        if figures is None:
            raise ConsoleRefused("babystep-no-print")
        if figures.get("total_s", 0.0) > until_s:
            raise ConsoleRefused("babystep-late", minutes=until_s / 60)
        access = self.agent.access
        session = access.sessions.current(machine_id) if access else None
        if training is None or access is None or session is None:
            return
        member = access.directory.member(session["member_id"])
        if member is None or member.has_role("manager") or member.has_role("trainer"):
            return
        held = member.trainings.get(training)
        if held is None or (held.expires is not None and held.expires.timestamp() < time.time()):
            raise ConsoleRefused("babystep-training", training=training)



def job_outside_travel(machine: Machine, job: dict[str, Any]) -> Msg | None:
    """Why a job, moved by the machine's current work offset, would leave its travel (None if it fits).
    Checked where machine coordinates are referenced (a GRBL that homes, reporting its WCO); printers are
    checked at upload against their absolute volume."""
    if not machine.work_offset or not machine.driver.travel_known:
        return None
    bounds = json.loads(job["estimate_json"] or "{}").get("bounds_all") or {}
    return travel_problem(bounds, machine.work_offset, machine.profile.volume.axes, "job")


def _axes(body: dict[str, Any], key: str, nonzero: bool = False) -> dict[str, float]:
    raw = body.get(key)
    if not isinstance(raw, dict) or not raw or len(raw) > 3:
        raise InvalidInput(f"{key}: expected up to three of X, Y, Z with a number each, e.g. {{\"X\": 1}}")
    out: dict[str, float] = {}
    for axis in raw:
        if axis not in ("X", "Y", "Z"):
            raise InvalidInput(f"{key}.{axis}: only X, Y and Z can be moved from the console")
        out[axis] = _number(raw, axis, -MAX_MOVE_MM, MAX_MOVE_MM, where=f"{key}.{axis}")
        if nonzero and out[axis] == 0:
            raise InvalidInput(f"{key}.{axis}: a jog of 0 mm moves nothing")
    return out


def _number(
    body: dict[str, Any], key: str, low: float, high: float, default: float | None = None, where: str = ""
) -> float:
    value, where = body.get(key, default), where or key
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidInput(f"{where}: expected a number from {low:g} to {high:g}, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(f"{where}: {value:g} is outside {low:g} to {high:g}")
    return float(value)
