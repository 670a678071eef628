"""Issue 18: the machine console in the machine thread, against the simulators — jog, work zero, probe,
frame, unlock, and jobs that wait for a person (GRBL M0 and a host-side M6, Marlin M0/M600 with M108).
The simulators' execution logs show the exact commands that reached the machine."""

from __future__ import annotations

import time

import pytest

from afn_agent.firmware.profile import load_profile
from afn_agent.machine.console import ConsoleAction, ConsoleRefused, Do
from afn_agent.machine.events import MachineState, Probed, PromptShown
from afn_agent.machine.worker import Machine
from tests.helpers import grbl_at_rest, wait_for


def act(m, do: Do, **kw) -> str:
    return m.console(ConsoleAction(do, "test", **kw)).result(5)


def refused(m, do: Do, **kw) -> dict:
    """The refusal's body (reason key, English sentence, words), once its reason is checked to be in French
    too."""
    with pytest.raises(ConsoleRefused) as err:
        act(m, do, **kw)
    body = err.value.body()
    assert body["reason"].startswith(("refused.", "state.")) and body["error"] == body["words"]["en"]
    assert body["words"]["fr"] and body["words"]["fr"] != body["words"]["en"] and "{" not in body["words"]["fr"]
    return body


def at_rest(m, timeout: float = 10.0) -> None:
    grbl_at_rest(m, timeout)


def events_of(m, kind):
    out = []
    while not m.events.empty():
        e = m.events.get_nowait()
        if isinstance(e, kind):
            out.append(e)
    return out


def quiet(m) -> None:
    """Nothing of ours waits for an answer (a printer has no status report to say it is at rest)."""
    wait_for(lambda: m.driver.core.oldest_unanswered() is None, 10, "every line answered")


def logged(sim) -> list[str]:
    """The execution log, spaces dropped as GRBL drops them when it reads a line."""
    return [f"{label}\t{cmd.replace(' ', '') if label != 'rt' else cmd}" for label, cmd in sim.executed()]


def nospace(*lines: str) -> list[str]:
    return [line.replace(" ", "") for line in lines]


def test_mill_set_up_jog_zero_probe_frame_reach_the_machine(start_sim, connect, tmp_path):
    sim = start_sim("grbl", plate=True, plate_z=-60.0)
    m = connect(sim, "grbl-1.1")
    act(m, Do.JOG, axes={"X": -100.0, "Y": -120.0}, feed=6000)
    at_rest(m)
    act(m, Do.JOG, axes={"Z": -30.0}, feed=3000)
    at_rest(m)
    wait_for(lambda: m.position.get("Z") == -30.0, 5, "position read back")
    act(m, Do.ZERO, axes={"X": 0.0, "Y": 0.0})
    at_rest(m)
    wait_for(lambda: m.work_offset.get("X") == -100.0 and m.work_offset.get("Y") == -120.0, 5, "WCO")
    act(m, Do.PROBE, feed=100, depth_mm=50, plate_mm=15.0, retract_mm=5.0)
    wait_for(lambda: m.work_offset.get("Z") == -75.0, 10, "Z zero from the plate")  # -60 - 15
    at_rest(m)
    probed = [e for e in events_of(m, Probed)]
    assert probed and probed[0].touched and probed[0].position["Z"] == -60.0
    act(m, Do.FRAME, box={"X": (0.0, 40.0), "Y": (0.0, 30.0)}, feed=2000, safe_z=-1.0)
    at_rest(m, 20)
    log = logged(sim)
    for want in nospace("$\t$J=G91 G21 X-100 Y-120 F6000", "$\t$J=G91 G21 Z-30 F3000", "-\tG10 L20 P1 X0 Y0",
                        "-\tG90 G38.2 Z-80 F100", "-\tG10 L20 P1 Z15", "-\tG90 G0 Z20", "-\tG53 G0 Z-1",
                        "-\tG90 G0 X0 Y0", "-\tG0 X40 Y0", "-\tG0 X40 Y30", "-\tG0 X0 Y30"):
        assert want in log, (want, log[-20:])
    assert "M3" not in " ".join(log[-8:])  # a mill frames with the spindle off


def test_travel_is_checked_before_a_byte_is_sent(start_sim, connect):
    sim = start_sim("grbl", homing_lock=True)  # $22=1: it homes, so machine coordinates mean its travel
    m = _homed(sim)
    try:
        _travel_checks(m, sim)
    finally:
        m.close()


def _travel_checks(m, sim) -> None:
    wait_for(lambda: "X" in m.position, 5, "position")
    with pytest.raises(ConsoleRefused) as err:
        act(m, Do.JOG, axes={"X": 5.5}, feed=1000)
    assert err.value.body()["words"] == {
        "en": "This jog takes X to 5.5 mm (machine coordinates), 5.5 mm beyond its travel (-300 to 0 mm).",
        "fr": "Ce déplacement amène l'axe X à 5,5 mm (coordonnées machine), 5,5 mm au-delà de sa course "
              "(de -300 à 0 mm).",
    }
    act(m, Do.JOG, axes={"X": -100.0}, feed=6000)
    at_rest(m)
    act(m, Do.ZERO, axes={"X": 0.0})
    wait_for(lambda: m.work_offset.get("X") == -100.0, 5, "WCO")
    before = len(sim.executed())
    why = refused(m, Do.FRAME, box={"X": (0.0, 150.0), "Y": (-10.0, 0.0)}, feed=1000)["error"]
    assert why.startswith("The frame takes X to 50 mm (machine coordinates), 50 mm beyond"), why
    time.sleep(0.3)  # real time: anything sent would have run by now
    assert len(sim.executed()) == before


def _homed(sim):
    m = Machine("m", load_profile("grbl-1.1"), str(sim.link), baud=sim.options["baud"]).start()
    wait_for(lambda: m.state == MachineState.ALARM, 15, "GRBL locked until homed")
    act(m, Do.HOME)
    wait_for(lambda: m.state == MachineState.IDLE, 15, "homed")
    at_rest(m)
    return m


def test_travel_is_not_checked_where_the_machine_does_not_home(start_sim, connect):
    sim = start_sim("grbl")  # $22=0: machine coordinates count from where it was switched on
    m = connect(sim, "grbl-1.1")
    at_rest(m)
    act(m, Do.JOG, axes={"X": 5.0}, feed=3000)
    at_rest(m)
    assert "$J=G91G21X5F3000" in [c.replace(" ", "") for _, c in sim.executed()]


def test_probe_that_touches_nothing_fails_cleanly_and_unlock_says_so(start_sim, connect):
    sim = start_sim("grbl")  # no plate
    m = connect(sim, "grbl-1.1")
    at_rest(m)
    act(m, Do.PROBE, feed=100, depth_mm=10, plate_mm=15.0)
    wait_for(lambda: m.state == MachineState.ALARM, 10, "alarm")
    probed = events_of(m, Probed)
    assert probed and not probed[0].touched
    assert refused(m, Do.JOG, axes={"X": -1.0}, feed=100)["reason"] == "refused.not-idle"
    act(m, Do.UNLOCK)
    wait_for(lambda: m.state == MachineState.IDLE, 10, "unlocked")
    assert refused(m, Do.UNLOCK)["reason"] == "refused.nothing-to-unlock"


def test_continuous_jog_stops_when_the_button_is_no_longer_held(start_sim, connect):
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    at_rest(m)
    act(m, Do.JOG, axes={"X": -1.0}, feed=600, continuous=True)  # towards X -300 at 10 mm/s
    wait_for(lambda: m.grbl_state == "Jog", 5, "jogging")
    wait_for(lambda: m.grbl_state == "Idle", 5, "stopped by the lease")  # nobody renewed it
    x = m.position["X"]
    assert -20 < x < 0, x
    assert any(cmd == "0x85 jog cancel" for label, cmd in sim.executed() if label == "rt")


def test_grbl_m0_and_m6_wait_for_a_person(start_sim, connect, tmp_path):
    sim = start_sim("grbl", plate=True, plate_z=-50.0)
    m = connect(sim, "grbl-1.1")
    m.settings = type(m.settings)(tool_change={"X": -5.0, "Y": -5.0})
    job = tmp_path / "tool.nc"
    job.write_text("G21 G90\nG0 X1 Y1\n(Remove the clamps)\nM0\nG0 X2\nT2 M6 (6 mm end mill)\nG0 Z5\nG1 X3 F100\n")
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.WAITING, 10, "M0 prompt")
    assert m.prompt.kind == "pause" and m.prompt.text == "Remove the clamps"
    act(m, Do.CONTINUE)
    wait_for(lambda: m.state == MachineState.WAITING and m.prompt.kind == "tool-change", 10, "M6 prompt")
    assert m.prompt.tool == 2 and m.prompt.text == "6 mm end mill" and m.prompt.host
    at_rest(m)
    frame = refused(m, Do.FRAME, box={"X": (0.0, 1.0), "Y": (0.0, 1.0)}, feed=100)
    assert frame["reason"] == "refused.tool-change-only"
    act(m, Do.JOG, axes={"Z": -20.0}, feed=3000)
    at_rest(m)
    act(m, Do.PROBE, feed=100, depth_mm=40, plate_mm=10.0)
    wait_for(lambda: m.work_offset.get("Z") == -60.0, 10, "re-probed")
    at_rest(m)
    act(m, Do.CONTINUE)
    r = m.wait_job(20)
    assert r.outcome == "completed", r
    log = logged(sim)
    assert "rt\t~ cycle start (M0 continued)" in log
    assert not any("M6" in line for line in log)  # GRBL 1.1 would answer error:20
    tool = log.index("-\tG53G0X-5Y-5")
    assert log[tool - 2:tool] == ["-\tM5", "-\tG53G0Z-1"]
    assert log.index("-\tG10L20P1Z10") > tool
    prompts = events_of(m, PromptShown)
    assert [p.prompt_kind for p in prompts] == ["pause", "tool-change"]


def test_marlin_m0_and_m600_prompt_and_m108_continues(start_sim, connect, tmp_path):
    sim = start_sim("marlin")
    m = connect(sim, "marlin2")
    job = tmp_path / "colour.gcode"
    job.write_text("G28\nG1 X10 Y10 F3000\nM0 Remove the brim\nG1 X20\n;COLOR_CHANGE,T0,#FF0000\nM600\nG1 X30\n")
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.WAITING, 15, "M0 prompt")
    assert m.prompt.kind == "pause" and m.prompt.text == "Remove the brim"
    assert refused(m, Do.JOG, axes={"X": 1.0}, feed=100)["reason"] == "refused.not-idle"  # not a host wait
    act(m, Do.CONTINUE)
    wait_for(lambda: m.state == MachineState.WAITING and m.prompt.kind == "filament-change", 15, "M600")
    assert m.prompt.text == "COLOR_CHANGE,T0,#FF0000"
    act(m, Do.CONTINUE)
    r = m.wait_job(20)
    assert r.outcome == "completed", r
    log = logged(sim)
    assert log.count("rt\tM108 (wait for user ended)") == 2


def test_printer_tools_preheat_filament_raise_and_babysteps(start_sim, connect, tmp_path):
    sim = start_sim("marlin", speed=20, babystep=True)
    m = connect(sim, "marlin2")
    quiet(m)
    wait_for(lambda: "T0" in m.temperatures or "T" in m.temperatures, 10, "the first temperature report")
    cold = refused(m, Do.LOAD, mm=80, feed=300, hotend=170)  # cold: refused, nothing sent
    assert cold["reason"] == "refused.cold" and "170 °C" in cold["words"]["fr"], cold
    act(m, Do.PREHEAT, hotend=210, bed=60)
    wait_for(lambda: m.temperatures.get("T", (0, 0))[0] >= 170, 30, "the nozzle hot enough")
    quiet(m)
    act(m, Do.LOAD, mm=80, feed=300, hotend=170)
    quiet(m)
    act(m, Do.RAISE_Z, mm=10, feed=600)
    wait_for(lambda: "G90" in [c for _, c in sim.executed()][-3:], 10, "raised")
    idle = refused(m, Do.BABYSTEP, mm=0.05)  # not while idle: a print's first layers
    assert idle["reason"] == "refused.babystep-not-printing" and "(Prête)" in idle["words"]["fr"], idle
    job = tmp_path / "slow.gcode"
    job.write_text("G28\n" + "".join(f"G1 X{10 + i % 50} Y10 F600\n" for i in range(3000)))
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.PRINTING and m.snapshot()["lines_acked"] > 20, 15, "printing")
    act(m, Do.BABYSTEP, mm=0.05)
    assert refused(m, Do.COOLDOWN)["reason"] == "refused.not-idle"
    m.cancel()
    m.wait_job(20)
    quiet(m)
    act(m, Do.COOLDOWN)
    quiet(m)
    m.wait_job(20)
    ran = [c for _, c in sim.executed()]
    for want in ("M104 S210", "M140 S60", "M83", "G1 E80 F300", "M82", "G0 Z10 F600", "M290 Z0.05", "M104 S0"):
        assert want in ran, (want, ran[-30:])
    assert ran.index("G1 E80 F300") > ran.index("M104 S210")


def test_babysteps_need_the_firmware_to_have_them(start_sim, connect, tmp_path):
    sim = start_sim("marlin")  # Cap:BABYSTEPPING:0, as the real Marlin 2.1.2 build here says
    m = connect(sim, "marlin2")
    job = tmp_path / "slow.gcode"
    job.write_text("".join(f"G1 X{10 + i % 50} Y10 F600\n" for i in range(3000)))
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.PRINTING, 15, "printing")
    assert refused(m, Do.BABYSTEP, mm=0.05)["reason"] == "refused.no-babystepping"
    m.cancel()
    m.wait_job(20)


def test_marlin_host_prompt_words_replace_ours(start_sim, connect, tmp_path):
    sim = start_sim("marlin", prompt_support=True)  # HOST_PROMPT_SUPPORT: //action:prompt_begin …
    m = connect(sim, "marlin2")
    job = tmp_path / "colour.gcode"
    job.write_text("G28\nG1 X10 F3000\nM600\nG1 X20\n")
    m.start_job(job)
    wait_for(lambda: m.state == MachineState.WAITING, 15, "M600")
    assert (m.prompt.kind, m.prompt.text) == ("filament-change", "Insert filament and press Continue")
    act(m, Do.CONTINUE)
    assert m.wait_job(20).outcome == "completed"


def test_a_bug_in_a_console_action_is_refused_and_the_machine_thread_lives_on(start_sim, connect, monkeypatch):
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    at_rest(m)

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("afn_agent.firmware.console_lines.GrblConsole.zero", broken)
    bug = refused(m, Do.ZERO, axes={"X": 0.0})
    assert bug["reason"] == "refused.bug" and "Internal error in zero: RuntimeError('a bug')" in bug["error"]
    assert m.is_alive() and m.state == MachineState.IDLE
    act(m, Do.JOG, axes={"X": -1.0}, feed=1000)  # the thread still takes actions
    at_rest(m)
