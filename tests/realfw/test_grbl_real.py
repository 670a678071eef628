"""The agent against real GRBL 1.1h (its own firmware code inside grbl-sim, behind a pty).

GRBL_SIM_BLOCKLOG, every block its planner accepted, is the truth. grbl-sim runs several times slower
than real time here, so the jobs are short moves at high feed.
"""

from __future__ import annotations

import time

from tests.helpers import wait_for
from tests.realfw.firmware import RealFirmware

STEPS_PER_MM = 250  # GRBL 1.1h defaults ($100-$102)


def grbl(real_fw) -> RealFirmware:
    """Real GRBL with brisk accelerations ($120-$122; the default 10 mm/s² makes short moves crawl)."""
    fw = real_fw("grbl")
    fw.say("$$")  # a fresh EEPROM image answers its first line with error:7 (settings restored) at boot
    for axis in (120, 121, 122):
        assert fw.say(f"${axis}=2000").rstrip().endswith(b"ok")
    return fw


def zigzag(path, n: int, step: float = 0.2, feed: int = 3000, bad_at: int = 0):
    """`n` short G1 moves along a shallow zigzag; with `bad_at`, that file line is a command GRBL
    refuses (error:20)."""
    lines = ["G21", "G90", "G94"]
    for i in range(1, n + 1):
        lines.append(f"G1 X{i * step:.3f} Y{(i % 2) * 0.004:.3f} F{feed}")
        if len(lines) + 1 == bad_at:
            lines.append("G5 X1 Y1")
    path.write_text("\n".join(lines) + "\n")
    return path


def targets(path) -> list[tuple[int, int, int]]:
    """The step targets a file's G1 moves must plan, in order."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("G1 "):
            w = dict((p[0], float(p[1:])) for p in line.split()[1:])
            out.append((round(w["X"] * STEPS_PER_MM), round(w["Y"] * STEPS_PER_MM), 0))
    return out


def moving(m, path) -> None:
    """Start a job and wait until the controller reports it running."""
    m.start_job(path)
    wait_for(lambda: m.grbl_state == "Run", 30, "the job to run")


def test_job_plans_every_block_once_in_order(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    path = zigzag(tmp_path / "z.gcode", 150)  # some 3 KB: GRBL's 128-byte RX buffer refilled many times
    m = machine_on(fw.link, "grbl-1.1")
    m.start_job(path)
    r = m.wait_job(240)
    assert r.outcome == "completed", r
    assert fw.blocks() == targets(path)
    assert r.lines == 153 and r.errors == 0


def test_cancel_holds_until_stopped_then_resets_keeping_position_five_times(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    path = zigzag(tmp_path / "long.gcode", 2000, step=0.5, feed=600)
    short = zigzag(tmp_path / "short.gcode", 10)
    m = machine_on(fw.link, "grbl-1.1")
    alarms = []
    for run in range(5):
        moving(m, path)
        m.cancel("test")
        r = m.wait_job(60)
        assert r.outcome == "cancelled", (run, r)
        wait_for(lambda: m.state == "idle" and m.grbl_state == "Idle", 20, f"Idle after cancel {run}")
        alarms.append(m.core.alarm_locked)
        m.start_job(short)
        r = m.wait_job(120)
        assert r.outcome == "completed", (run, r)
    assert alarms == [False] * 5
    assert m.core.errors == 0


def test_feed_hold_and_resume_finish_the_job(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    path = zigzag(tmp_path / "z.gcode", 80, step=0.5, feed=1200)  # 20-odd s of motion on real GRBL here
    m = machine_on(fw.link, "grbl-1.1")
    moving(m, path)
    m.pause()
    wait_for(lambda: m.grbl_state == "Hold:0", 30, "Hold:0")  # 0: the hold is complete
    assert m.core.motion_stopped
    m.resume()
    r = m.wait_job(300)
    assert r.outcome == "completed", r
    assert fw.blocks() == targets(path)


def test_connect_to_a_controller_in_alarm_then_unlock_and_run(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    assert fw.say("$22=1").rstrip().endswith(b"ok")  # homing on: GRBL 1.1h powers up locked in alarm
    fw.restart()
    m = machine_on(fw.link, "grbl-1.1", ready=False)
    wait_for(lambda: m.state == "alarm", 30, "the alarm state")
    m.unlock()
    wait_for(lambda: m.state == "idle", 20, "idle after the unlock")
    m.start_job(zigzag(tmp_path / "z.gcode", 10))
    r = m.wait_job(120)
    assert r.outcome == "completed", r


def test_reconnect_after_a_reboot_then_every_answer_lands_on_its_line(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    m = machine_on(fw.link, "grbl-1.1", reconnect_s=0.5)
    fw.restart()  # a power cycle: the port goes away and comes back
    wait_for(lambda: m.state in ("disconnected", "connecting"), 10, "the port to go")
    wait_for(lambda: m.state == "idle", 30, "idle again")
    m.realtime("reset")  # and a reset while connected: banner, then greeting again
    time.sleep(1.0)  # real time: the reset and its banner (idle before and after: no state to wait on)
    wait_for(lambda: m.state == "idle", 30, "idle again")
    path = zigzag(tmp_path / "z.gcode", 50)
    m.start_job(path)
    r = m.wait_job(120)
    assert r.outcome == "completed" and r.errors == 0, r
    assert fw.blocks() == targets(path)


def test_error_mid_file_names_its_line_and_meaning(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    path = zigzag(tmp_path / "bad.gcode", 40, bad_at=25)
    m = machine_on(fw.link, "grbl-1.1")
    m.start_job(path)
    r = m.wait_job(120)
    assert r.outcome == "failed" and r.code == "firmware-error", r
    assert r.reason.startswith("line 25: error:20 ")
    assert "Unsupported" in r.reason or "unsupported" in r.reason
    wait_for(lambda: m.state == "idle" and not m.core.alarm_locked, 20, "idle without an alarm")


def test_emergency_stop_while_moving_resets_into_alarm(real_fw, machine_on, tmp_path):
    fw = grbl(real_fw)
    path = zigzag(tmp_path / "long.gcode", 2000, step=0.5, feed=600)
    m = machine_on(fw.link, "grbl-1.1")
    moving(m, path)
    m.emergency_stop("test")
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "emergency-stop", r
    wait_for(lambda: m.state == "alarm", 20, "the alarm state")  # ALARM:3: position lost, a person checks
    m.unlock()
    wait_for(lambda: m.state == "idle", 20, "idle after the unlock")
