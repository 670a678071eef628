"""Issue 18: the machine console against real GRBL 1.1h and real Marlin 2.1.2.

GRBL's planner log (every block it accepted, in steps) shows the jogs and the frame; its status reports
show the work offset a `G10 L20 P1` set. grbl-sim reads every input pin as triggered, so a probe fails
there with ALARM:4 (probe not in its expected state): the clean failure path. Marlin's command log shows
the M0 it waited on and the M108 that ended the wait.
"""

from __future__ import annotations

import time

import pytest

from afn_agent.machine.console import ConsoleAction, ConsoleRefused, Do
from afn_agent.machine.events import Alarm, MachineState, Probed
from tests.helpers import grbl_at_rest, wait_for
from tests.realfw.test_grbl_real import STEPS_PER_MM, grbl
from tests.realfw.test_marlin_real import marlin


def act(m, do: Do, **kw) -> str:
    return m.console(ConsoleAction(do, "test", **kw)).result(5)


def settled(m, timeout: float = 60.0) -> None:
    grbl_at_rest(m, timeout, gap_s=0.5)  # grbl-sim lags behind real time


def drained(m) -> list:
    out = []
    while not m.events.empty():
        out.append(m.events.get_nowait())
    return out


def steps(x: float, y: float, z: float) -> tuple[int, int, int]:
    return round(x * STEPS_PER_MM), round(y * STEPS_PER_MM), round(z * STEPS_PER_MM)


def test_jog_zero_and_frame_on_real_grbl(real_fw, machine_on):
    fw = grbl(real_fw)
    assert fw.say("$22=1").rstrip().endswith(b"ok")  # homing enabled: machine coordinates mean the travel
    m = machine_on(fw.link, "grbl-1.1")
    settled(m)
    act(m, Do.JOG, axes={"X": -4.0, "Y": -2.0}, feed=3000)
    settled(m)
    wait_for(lambda: m.position.get("X") == -4.0 and m.position.get("Y") == -2.0, 30, "position")
    act(m, Do.ZERO, axes={"X": 0.0, "Y": 0.0})
    wait_for(lambda: m.work_offset.get("X") == -4.0 and m.work_offset.get("Y") == -2.0, 30, "WCO from GRBL")
    settled(m)
    act(m, Do.FRAME, box={"X": (0.0, 1.0), "Y": (0.0, 0.5)}, feed=3000, safe_z=-0.5)
    settled(m, 120)
    blocks = fw.blocks()
    assert blocks[0] == steps(-4, -2, 0)  # the jog
    trace = [steps(-4, -2, -0.5), steps(-3, -2, -0.5), steps(-3, -1.5, -0.5), steps(-4, -1.5, -0.5),
             steps(-4, -2, -0.5)]
    assert blocks[1:] == trace, blocks
    with pytest.raises(ConsoleRefused, match=r"^This jog takes X to 1 mm") as err:
        act(m, Do.JOG, axes={"X": 5.0}, feed=3000)
    assert err.value.body()["words"]["fr"].startswith("Ce déplacement amène l'axe X à 1 mm")


def test_probe_fails_cleanly_on_real_grbl_and_unlock_recovers(real_fw, machine_on):
    fw = grbl(real_fw)
    m = machine_on(fw.link, "grbl-1.1")
    settled(m)
    act(m, Do.PROBE, feed=100, depth_mm=5, plate_mm=10.0)
    wait_for(lambda: m.state == MachineState.ALARM, 30, "the probe's alarm")
    events = drained(m)
    alarms = [e for e in events if isinstance(e, Alarm)]
    assert alarms and alarms[0].code == 4 and "probe" in alarms[0].meaning.lower()
    probed = [e for e in events if isinstance(e, Probed)]
    assert probed and not probed[0].touched
    with pytest.raises(ConsoleRefused) as err:
        act(m, Do.JOG, axes={"X": -1.0}, feed=1000)
    assert err.value.body()["reason"] == "refused.not-idle", err.value.body()
    act(m, Do.UNLOCK)
    wait_for(lambda: m.state == MachineState.IDLE, 30, "unlocked")
    settled(m)
    act(m, Do.JOG, axes={"X": -1.0}, feed=3000)
    settled(m)
    assert fw.blocks()[-1] == steps(-1, 0, 0)


def test_m0_and_a_tool_change_wait_for_a_person_on_real_grbl(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    m = machine_on(fw.link, "grbl-1.1")
    job = tmp_path / "tools.nc"
    job.write_text("G21 G90\nG1 X-1 F3000\n(check the clamps)\nM0\nG1 X-2\nT2 M6\nG1 X-3\n")
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.WAITING, 60, "M0 held by GRBL")
    assert m.prompt.kind == "pause" and m.prompt.text == "check the clamps" and m.grbl_state == "Hold:0"
    act(m, Do.CONTINUE)
    wait_for(lambda: m.prompt is not None and m.prompt.kind == "tool-change", 60, "the tool change")
    assert m.prompt.tool == 2
    settled(m)
    act(m, Do.JOG, axes={"Z": -1.0}, feed=3000)  # the member may jog while the job waits
    settled(m)
    act(m, Do.CONTINUE)
    r = m.wait_job(120)
    assert r.outcome == "completed" and r.errors == 0, r  # M6 never reached GRBL (error:20)
    xs = [b[0] for b in fw.blocks()]
    assert xs[:2] == [steps(-1, 0, 0)[0], steps(-2, 0, 0)[0]] and xs[-1] == steps(-3, 0, 0)[0]


def test_m0_prompt_and_m108_on_real_marlin(real_fw, machine_on, tmp_path):
    fw = marlin(real_fw)
    m = machine_on(fw.link, "marlin2")
    job = tmp_path / "pause.gcode"
    job.write_text("G92 X0 Y0 Z0\nG1 X5 F3000\nM0 Remove the support\nG1 X10\n")
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.WAITING, 30, "Marlin paused for user")
    assert m.prompt.kind == "pause" and m.prompt.text == "Remove the support"
    time.sleep(1.0)  # real time: the job stays held while nobody answers
    assert m.state == MachineState.WAITING
    act(m, Do.CONTINUE)
    r = m.wait_job(30)
    assert r.outcome == "completed", r
    # the out-of-band M108 freed the M0 at once (emergency parser); its copy in the RX ring runs after the
    # job's last lines, which may be answered before it: waited for, not read at once
    wait_for(lambda: "M108" in fw.executed(), 10, "M108 run by Marlin")
    ran = fw.executed()
    assert "M0 Remove the support" in " ".join(ran)
    assert ran.index("M108") > next(i for i, c in enumerate(ran) if "M0 Remove" in c)


def test_nozzle_then_bed_targets_at_once_on_real_marlin(real_fw, machine_on):
    """Home Assistant sets the nozzle then the bed in two quick requests: the second is taken while the
    first is still unanswered (a heater target moves nothing), and real Marlin gets both."""
    fw = marlin(real_fw)
    m = machine_on(fw.link, "marlin2")
    act(m, Do.PREHEAT, hotend=190.0, bed=None)
    act(m, Do.PREHEAT, hotend=None, bed=55.0)  # at once: refused "busy" before
    wait_for(lambda: any(" M140 S55*" in c for c in fw.executed()), 10, "Marlin executed the bed target")
    ran = fw.executed()  # framed as sent: `N3 M104 S190*110`
    assert [c.split(" ", 1)[1].split("*")[0] for c in ran if " M104 " in c or " M140 " in c] == ["M104 S190", "M140 S55"]
