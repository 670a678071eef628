"""The machine console inside the machine thread: set-up actions (jog, zero, probe, frame …) and the
prompts of a job that waits for a person (M0/M1, a tool change, M600).

Control (another thread) posts a fully specified `ConsoleAction` with a future; the machine thread
decides here whether the machine can take it now (its state, its travel, what it is doing), queues the
lines its family's console builder gives, and answers the future at once — it never waits for the
caller. What the action then does (a probe's result, a prompt) comes back as machine events.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import Conflict
from ..firmware import events as ev
from ..firmware.console_lines import NotHere
from ..i18n import Msg, msg
from . import events as me
from .events import MachineState

if TYPE_CHECKING:
    from .loop import MachineLoop

log = logging.getLogger("afn_agent")
JOG_LEASE_S = 0.5  # a continuous jog stops this long after the last "still pressed" (release, lost link)
TOOL_CHANGE_RE = re.compile(r"(?:^|\s)M0*6(?![\d.])", re.I)
TOOL_RE = re.compile(r"(?:^|\s)T(\d+)", re.I)


class Do(StrEnum):
    """What a person asks of the machine from its console."""

    JOG = "jog"
    JOG_STOP = "jog-stop"
    ZERO = "zero"
    GO_TO_ZERO = "go-to-zero"
    HOME = "home"
    PROBE = "probe"
    FRAME = "frame"
    UNLOCK = "unlock"
    CONTINUE = "continue"
    PREHEAT = "preheat"
    COOLDOWN = "cooldown"
    LOAD = "load"
    UNLOAD = "unload"
    RAISE_Z = "raise-z"
    BABYSTEP = "babystep"


AT_TOOL_CHANGE = frozenset({Do.JOG, Do.JOG_STOP, Do.ZERO, Do.PROBE, Do.RAISE_Z, Do.CONTINUE})
# What may be sent while lines are still unanswered: jogs, and heater targets (M104/M140 move nothing;
# two targets in a row, as Home Assistant sets nozzle then bed, must both be taken). The rest wait.
WHILE_MOVING = frozenset({Do.JOG, Do.JOG_STOP, Do.PREHEAT, Do.COOLDOWN})


def travel_problem(box: Mapping[str, Sequence[float]], offset: Mapping[str, float],
                   travel: Mapping[str, tuple[float, float]], what: str) -> Msg | None:  # fmt: skip
    """Why a box in work coordinates, moved by the work offset (GRBL WCO), leaves the machine's travel —
    naming the axis and by how much — or None when it fits. `what`: jog, frame, raise-z or job."""
    for axis, (lo, hi) in box.items():
        if axis not in travel:
            continue
        low, high = travel[axis]
        for target in (lo + offset.get(axis, 0.0), hi + offset.get(axis, 0.0)):
            if target < low - 1e-6 or target > high + 1e-6:
                by = low - target if target < low else target - high
                return msg("refused.travel", what=msg(f"refused.what.{what}"), axis=axis, target=target,
                           by=by, low=float(low), high=float(high))  # fmt: skip
    return None


def state_said(state: MachineState, kind: str) -> Msg:
    """The machine's state as the screens name it (printing: by what the machine makes), for a reason."""
    if state != MachineState.PRINTING:
        return msg(f"state.{state}")
    return msg(f"state.printing.{kind}" if kind in ("printer", "mill", "laser") else "state.printing.other")


class ConsoleRefused(Conflict):
    """The machine cannot take this action now; the reason (a `refused.*` message with its facts, or a
    travel Msg) says why in each language: state, travel, firmware."""

    code = "console-refused"

    def __init__(self, reason: str | Msg, **facts: Any) -> None:
        super().__init__(reason if isinstance(reason, Msg) else msg(f"refused.{reason}", **facts))


@dataclass(frozen=True, slots=True)
class ConsoleAction:
    """One console action with everything it needs (feeds, plate, box) filled in from the config."""

    do: Do
    by: str
    axes: Mapping[str, float] = field(default_factory=dict)  # jog step / direction, zero values
    feed: float = 0.0
    continuous: bool = False
    box: Mapping[str, tuple[float, float]] | None = None  # frame: the job's working X/Y box (work coords)
    safe_z: float | None = None  # machine Z for rapids
    plate_mm: float = 0.0
    retract_mm: float = 5.0
    depth_mm: float = 30.0
    power: float = 0.0  # frame: a laser's S (0: beam off)
    hotend: float | None = 0.0  # preheat: None leaves that target; load/unload: the least to extrude at
    bed: float | None = 0.0
    mm: float = 0.0  # filament length, Z raise, babystep


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a waiting job asks of a person, as the status shows it."""

    kind: str  # pause | tool-change | filament-change | user
    text: str
    tool: int | None = None
    host: bool = False  # the agent holds the job (GRBL M6): the member may jog and probe meanwhile
    line: int | None = None
    since: float = field(default_factory=time.time)


class ConsoleRunner:
    """Owned by the machine thread (MachineLoop.console)."""

    def __init__(self, loop: MachineLoop) -> None:
        self.loop = loop
        self.jog_until = 0.0  # a continuous jog's lease (monotonic); 0: none
        self.jog_dir: tuple[tuple[str, float], ...] = ()
        self.probe: ConsoleAction | None = None  # a probe on its way: what to do when it touches
        self.pending_tool: tuple[int | None, str, object, str] | None = None  # M6 reached: tool, line, note
        self.host_words = ""  # Marlin's host prompt, announced just before its wait

    # ---- actions from people ---------------------------------------------------------------------------
    def take(self, action: ConsoleAction, answer: Future[str], now: float) -> None:
        """Answer at once; a console action never takes the machine thread down, not even by a bug."""
        try:
            answer.set_result(self._take(action, now))
        except ConsoleRefused as exc:
            answer.set_exception(exc)
        except NotHere as exc:  # the firmware cannot: its reason, in words
            answer.set_exception(ConsoleRefused(exc.key, **exc.facts))
        except Exception as exc:  # a bug: refused with its name, logged; the job and the port carry on
            log.exception("%s: console action %s failed", self.loop.m.name, action.do)
            answer.set_exception(ConsoleRefused("bug", action=str(action.do), error=repr(exc)))

    def _take(self, a: ConsoleAction, now: float) -> str:
        m, loop = self.loop.m, self.loop
        self._check_state(a)
        lines = loop.driver.console
        if a.do is Do.CONTINUE:
            return self._continue(a)
        if a.do is Do.UNLOCK:
            loop.driver.unlock()
            return "unlocking"
        if a.do is Do.JOG_STOP:
            self._stop_jog()
            return "jog stopped"
        if a.do is Do.JOG and a.continuous:
            return self._continuous(a, now)
        if a.do is Do.JOG:
            self._within_travel({k: m.position.get(k, 0.0) + v for k, v in a.axes.items()}, "jog")
            return self._send(a, lines.jog(a.axes, a.feed))
        if a.do is Do.ZERO:
            return self._send(a, lines.zero(a.axes))
        if a.do is Do.GO_TO_ZERO:
            return self._send(a, lines.go_to_zero(self._safe_z(a)))
        if a.do is Do.HOME:
            return self._send(a, lines.home())
        if a.do is Do.PROBE:
            work_z = m.position.get("Z", 0.0) - m.work_offset.get("Z", 0.0)
            sent = self._send(a, lines.probe(work_z - a.depth_mm, a.feed))
            self.probe = a
            return sent
        if a.do is Do.FRAME:
            assert a.box is not None
            self.fits(a.box, "frame")
            safe = self._safe_z(a) if loop.profile.kind == "mill" else None
            return self._send(a, lines.frame(a.box, safe, a.feed, a.power))
        if a.do is Do.PREHEAT or a.do is Do.COOLDOWN:
            return self._send(a, lines.preheat(a.hotend, a.bed))
        if a.do is Do.LOAD or a.do is Do.UNLOAD:
            filament = lines.filament(a.mm if a.do is Do.LOAD else -a.mm, a.feed)  # NotHere first
            self._hot_enough(a)
            return self._send(a, filament)
        if a.do is Do.RAISE_Z:
            self._within_travel({"Z": m.position.get("Z", 0.0) + a.mm}, "raise-z")
            return self._send(a, lines.raise_z(a.mm, a.feed))
        if a.do is Do.BABYSTEP:
            return self._send(a, lines.babystep(a.mm))
        raise ConsoleRefused("unknown-action", action=str(a.do))

    def _check_state(self, a: ConsoleAction) -> None:
        """Refused with the reason when the machine is not in a state to take it."""
        m, loop = self.loop.m, self.loop
        state, prompt = m.state, m.prompt
        said = state_said(state, loop.profile.kind)
        if a.do is Do.HOME and state == MachineState.ALARM and loop.job is None:
            return  # homing is how a controller that homes at power-up is unlocked
        if a.do is Do.UNLOCK:
            if state != MachineState.ALARM:
                raise ConsoleRefused("nothing-to-unlock", state=said)
            return
        if a.do is Do.CONTINUE:
            if state != MachineState.WAITING or prompt is None:
                raise ConsoleRefused("not-waiting", state=said)
            return
        if a.do is Do.BABYSTEP:
            if state != MachineState.PRINTING:
                raise ConsoleRefused("babystep-not-printing", state=said)
            return
        if state == MachineState.WAITING and prompt is not None and prompt.host:
            if a.do not in AT_TOOL_CHANGE:
                raise ConsoleRefused("tool-change-only")
        elif state != MachineState.IDLE or loop.job is not None:
            raise ConsoleRefused("not-idle", state=said)
        if a.do not in WHILE_MOVING and self._moving():
            raise ConsoleRefused("busy")
        if self.probe is not None and a.do is not Do.JOG_STOP:
            raise ConsoleRefused("probing")

    def _moving(self) -> bool:
        core = self.loop.driver.core
        return core.oldest_unanswered() is not None or not self.loop.driver.motion_stopped

    def _send(self, a: ConsoleAction, lines: tuple[str, ...]) -> str:
        self.loop.driver.send_script(lines)
        self.loop.emit(me.ConsoleSent, action=str(a.do), by=a.by, lines=lines)
        return f"{a.do}: {len(lines)} line(s) sent"

    def _continuous(self, a: ConsoleAction, now: float) -> str:
        """Towards the end of travel while the button is held; `jog` again renews the lease."""
        if not self.loop.driver.console.jog_cancels:
            raise ConsoleRefused("no-jog-cancel")
        if len(a.axes) != 1:
            raise ConsoleRefused("one-axis")
        direction = tuple(sorted(a.axes.items()))
        if self.jog_until and direction == self.jog_dir:
            self.jog_until = now + JOG_LEASE_S
            return "jog held"
        axis, sign = direction[0]
        travel = self.loop.profile.volume.axes.get(axis)
        if travel is None:
            raise ConsoleRefused("no-travel", axis=axis)
        self.jog_dir, self.jog_until = direction, now + JOG_LEASE_S
        end = travel[1] if sign > 0 else travel[0]
        return self._send(a, self.loop.driver.console.jog_to(axis, end, a.feed))

    def _stop_jog(self) -> None:
        self.jog_until, self.jog_dir = 0.0, ()
        if self.loop.driver.console.jog_cancels:
            self.loop.write_now(self.loop.driver.realtime_bytes("jog_cancel"))

    def _continue(self, a: ConsoleAction) -> str:
        """The person has done what the job waited for: on with it."""
        loop, prompt = self.loop, self.loop.m.prompt
        assert prompt is not None
        if prompt.host:
            if self._moving():
                raise ConsoleRefused("busy-continue")
            if self.pending_tool is not None and loop.job is not None:
                _, text, pos, _ = self.pending_tool
                loop.job_line_done(pos, text)  # the M6 never goes to GRBL (it would answer error:20)
            self.pending_tool = None
        else:
            data = loop.driver.continue_bytes()
            if not data:
                raise ConsoleRefused("no-continue")
            loop.write_now(data)
        loop.prompt_answered(a.by)
        return "continuing"

    # ---- checks ----------------------------------------------------------------------------------------
    def fits(self, box: Mapping[str, tuple[float, float]], what: str) -> None:
        if not self.loop.driver.travel_known:
            return
        if problem := travel_problem(box, self.loop.m.work_offset, self.loop.profile.volume.axes, what):
            raise ConsoleRefused(problem)

    def _within_travel(self, targets: Mapping[str, float], what: str) -> None:
        """A jog's targets (machine coordinates) inside the travel, checked from a known position only."""
        if not self.loop.driver.travel_known:
            return
        known = {k: (v, v) for k, v in targets.items() if k in self.loop.m.position}
        if problem := travel_problem(known, {}, self.loop.profile.volume.axes, what):
            raise ConsoleRefused(problem)

    def _safe_z(self, a: ConsoleAction) -> float:
        return a.safe_z if a.safe_z is not None else self._top_z()

    def _hot_enough(self, a: ConsoleAction) -> None:
        hotend = self.loop.m.temperatures.get("T0") or self.loop.m.temperatures.get("T")
        need = a.hotend or 0.0
        if hotend is None:
            raise ConsoleRefused("cold-unknown", need=round(need))
        if hotend[0] < need:
            raise ConsoleRefused("cold", now=round(hotend[0]), need=round(need))

    # ---- what the machine says -------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.jog_until and now > self.jog_until:
            self._stop_jog()  # the button was released without a word, or the screen went away

    def on_probe(self, result: ev.ProbeResult) -> None:
        a, self.probe = self.probe, None
        if a is None:
            return
        if result.touched:
            self.loop.driver.send_script(self.loop.driver.console.after_probe(a.plate_mm, a.retract_mm))
        z = result.position.get("Z")
        self.loop.m.last_probe = {"touched": result.touched, "z": z, "plate_mm": a.plate_mm, "t": time.time()}
        self.loop.emit(me.Probed, touched=result.touched, position=dict(result.position), plate_mm=a.plate_mm)

    def on_alarm(self) -> None:
        """An alarm ends whatever the console had under way (a probe that never touched: ALARM:4/5)."""
        if self.probe is not None:
            self.probe = None
            self.loop.m.last_probe = {"touched": False, "z": None, "plate_mm": 0.0, "t": time.time()}
            self.loop.emit(me.Probed, touched=False, position=dict(self.loop.m.position), plate_mm=0.0)
        self.jog_until, self.jog_dir = 0.0, ()

    def tool_change(self, text: str) -> int | None:
        """A job line that changes tool by hand (M6), or None: the tool number, -1 if it names none."""
        if not self.loop.driver.tool_change_by_host or not TOOL_CHANGE_RE.search(text):
            return None
        tool = TOOL_RE.search(text)
        return int(tool.group(1)) if tool else -1

    # ---- prompts ---------------------------------------------------------------------------------------
    def hold_for_tool(self, tool: int, text: str, pos: object, note: str) -> None:
        """The job reached an M6: nothing more is fed; the prompt comes once the lines before it ran."""
        self.pending_tool = (None if tool < 0 else tool, text, pos, note)

    def step(self, now: float) -> None:
        """Each turn of the machine thread: a continuous jog's lease, a tool change ready to show."""
        self.tick(now)
        loop = self.loop
        if self.pending_tool is None or loop.m.prompt is not None or loop.job is None or self._moving():
            return
        tool, _, pos, note = self.pending_tool
        settings = loop.m.settings
        safe_z = settings.safe_z if settings.safe_z is not None else self._top_z()
        loop.driver.send_script(loop.driver.console.tool_change(safe_z, settings.tool_change))
        self.show(Prompt("tool-change", note, tool, host=True, line=getattr(pos, "line", None)))

    def _top_z(self) -> float:
        return self.loop.profile.volume.axes.get("Z", (0.0, 0.0))[1] - 1.0

    def on_user_wait(self, event: ev.UserWait) -> None:
        """The firmware holds the job for a person (M0/M1, M600, a host prompt)."""
        loop = self.loop
        if loop.job is None or loop.m.prompt is not None:
            return
        word, _, rest = event.text.partition(" ")
        line = getattr(event.tag, "line", None)
        note = self.host_words or rest.strip() or (loop.job.notes.get(line, "") if line is not None else "")
        self.host_words = ""
        kind = {"M0": "pause", "M00": "pause", "M1": "pause", "M01": "pause", "M600": "filament-change"}
        self.show(Prompt(kind.get(word.upper(), "user"), note, line=line))

    def on_host_prompt(self, event: ev.HostPrompt) -> None:
        """Marlin's own words for what it waits for: they replace ours on the prompt shown (or show one)."""
        loop, shown = self.loop, self.loop.m.prompt
        if loop.job is None or not event.text:
            return
        if shown is None:
            self.host_words = event.text  # the wait itself (busy: paused for user) follows
        elif not shown.host and shown.text != event.text:
            self.show(Prompt(shown.kind, event.text, shown.tool, line=shown.line, since=shown.since))

    def show(self, prompt: Prompt) -> None:
        loop = self.loop
        loop.m.prompt = prompt
        loop.set_state(MachineState.WAITING)
        loop.emit(me.PromptShown, prompt_kind=prompt.kind, text=prompt.text, tool=prompt.tool,
                  line=prompt.line)  # fmt: skip

    def answered(self, by: str) -> None:
        loop, prompt = self.loop, self.loop.m.prompt
        loop.m.prompt = None
        if prompt is not None:
            loop.emit(me.PromptAnswered, by=by, waited_s=round(time.time() - prompt.since, 3))

    def job_ended(self) -> None:
        self.pending_tool, self.host_words = None, ""
        self.loop.m.prompt = None
