"""The full path against the simulated GRBL."""

import time

from tests.conftest import file_commands
from tests.helpers import profile, under_way, wait_for


def ran_job(sim, path):
    """GRBL drops the spaces of a line as it reads it; compare without them."""
    want = [c.replace(" ", "") for c in file_commands(path, parens=True)]
    ran = [cmd.replace(" ", "") for label, cmd in sim.executed() if label == "-"]
    start = ran.index(want[0])
    return ran[start : start + len(want)], want


def test_clean_stream_runs_every_line_once_in_order_without_overflow(start_sim, connect, circle):
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    path = circle(1500, flavour="grbl")
    m.start_job(path)
    r = m.wait_job(60)
    stats = sim.stop()
    assert r.outcome == "completed", r
    got, want = ran_job(sim, path)
    assert got == want
    assert stats["bytes_dropped"] == 0


def test_laser_job_on_grblhal_and_fluidnc_buffers(start_sim, connect, circle):
    for name, rx in (("grblhal", 1024), ("fluidnc", 256)):
        sim = start_sim("grbl", rx_buffer=rx, planner_blocks=35, variant=name)
        m = connect(sim, name)
        path = circle(800, flavour="laser")
        m.start_job(path)
        r = m.wait_job(60)
        stats = sim.stop()
        assert r.outcome == "completed", (name, r)
        assert ran_job(sim, path)[0] == ran_job(sim, path)[1]
        assert stats["bytes_dropped"] == 0
        m.close()


def test_alarm_mid_job_fails_with_its_meaning(start_sim, connect, circle):
    sim = start_sim("grbl", alarm_at=400)
    m = connect(sim, "grbl-1.1")
    m.start_job(circle(1500, flavour="grbl"))
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "alarm-1", r
    assert "hard limit" in r.reason


def test_controller_reset_mid_job_fails_and_is_never_resumed(start_sim, connect, circle):
    sim = start_sim("grbl", reset_at=400)
    m = connect(sim, "grbl-1.1")
    m.start_job(circle(1500, flavour="grbl"))
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "firmware-reset", r
    time.sleep(0.5)  # real time: anything streamed after the reset would reach the controller within this
    sim.stop()
    executed = len([1 for label, _ in sim.executed() if label == "-"])
    assert executed < 420  # nothing was streamed after the reset


def test_feed_hold_and_resume_mid_stream(start_sim, connect, circle):
    sim = start_sim("grbl", move_ms=2.0)
    m = connect(sim, "grbl-1.1")
    path = circle(1500, flavour="grbl")
    m.start_job(path)
    under_way(m, 100)
    delay = m.pause()
    wait_for(lambda: m.grbl_state == "Hold:0", 5, "the hold complete")
    assert m.state == "paused" and m.grbl_state == "Hold:0"  # GRBL 1.1: 0 = hold complete, 1 = decelerating
    m.resume()
    r = m.wait_job(60)
    stats = sim.stop()
    assert 0 <= delay < 0.05
    assert r.outcome == "completed", r
    assert len(stats["urgent_arrivals"]) == 1
    assert ran_job(sim, path)[0] == ran_job(sim, path)[1]


def test_door_opened_mid_job_holds_and_waits_for_a_person(start_sim, connect, circle):
    sim = start_sim("grbl", door_at=300, door_open_s=0.5, move_ms=2.0)
    m = connect(sim, "fluidnc")
    path = circle(1000, flavour="laser")
    m.start_job(path)
    wait_for(lambda: m.grbl_state.startswith("Door"), 10, "the door open")
    assert m.state == "paused"
    wait_for(lambda: m.grbl_state == "Door:0", 5, "the door closed again")
    time.sleep(0.5)  # real time: a job that resumed by itself would be running again within this
    assert m.grbl_state == "Door:0" and m.state == "paused"  # closed, but nobody resumed it
    m.resume()
    r = m.wait_job(60)
    assert r.outcome == "completed", r


def test_error_mid_job_stops_the_job_and_names_the_line(start_sim, connect, tmp_path):
    path = tmp_path / "bad.nc"
    path.write_text("G21 G90\nG1 X1 Y1 F500\nG1 X2 Y2\nG7.5 X3\nG1 X4 Y4\n" + "G1 X5 Y5\n" * 200)
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    m.start_job(path)
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "firmware-error", r
    assert "error:20" in r.reason and "G7.5 X3" in r.reason


def test_check_mode_dry_run_reports_errors_with_file_lines(start_sim, connect, tmp_path):
    path = tmp_path / "check.nc"
    path.write_text("G21 G90\nG1 X1 Y1 F500\nG7.5 X3\nG1 X4 Y4\nM66\nG1 X5 Y5\n")
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    m.start_job(path, check=True)
    r = m.wait_job(30)
    assert r.outcome == "completed", r
    assert [e["line"] for e in r.check_errors] == [3, 5]
    time.sleep(0.5)  # real time: the reset that leaves check mode is answered by its banner within this
    assert m.state == "idle"  # leaving check mode resets the controller: expected, not a fault
    sim.stop()
    log = sim.executed()
    assert [cmd for _, cmd in log].count("$C") == 2
    assert not [cmd for label, cmd in log if label == "-"]  # nothing moved
    assert len([1 for label, _ in log if label == "check"]) == 4


def test_silent_controller_faults_the_job(start_sim, connect, circle):
    sim = start_sim("grbl", move_ms=2.0)
    m = connect(sim, profile("grbl-1.1", ok_s=0.5))
    m.start_job(circle(1500, flavour="grbl"))
    under_way(m, 20)
    sim.proc.send_signal(19)  # SIGSTOP: the controller hangs with the port still open
    try:
        r = m.wait_job(15)
    finally:
        sim.proc.send_signal(18)
    assert r.outcome == "failed" and r.code == "no-answer", r


def test_emergency_stop_is_a_soft_reset(start_sim, connect, circle):
    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    m.start_job(circle(3000, flavour="grbl"))
    under_way(m, 100)
    delay = m.emergency_stop("test")
    r = m.wait_job(10)
    assert 0 <= delay < 0.05
    assert r.outcome == "failed" and r.code == "emergency-stop"
    wait_for(lambda: m.state == "alarm", 10, "the alarm")  # reset while moving: GRBL locks (ALARM:3) until a person unlocks
    m.start_job(circle(50, flavour="grbl"))
    assert m.wait_job(5).code == "busy"  # a locked machine takes no job
    m.unlock()
    wait_for(lambda: m.state == "idle", 10, "idle after unlock")
    m.start_job(circle(100, flavour="grbl"))
    assert m.wait_job(30).outcome == "completed"
    assert sim.stop()["resets"] == 1


def test_cancel_holds_then_resets_once_stopped_and_keeps_position(start_sim, connect, circle):
    sim = start_sim("grbl", move_ms=2.0)
    m = connect(sim, "grbl-1.1")
    m.start_job(circle(3000, flavour="grbl"))
    under_way(m, 100)
    m.cancel("member")
    r = m.wait_job(15)
    wait_for(lambda: m.state == "idle", 5, "idle after the cancel")
    assert r.outcome == "cancelled" and r.reason == "member", r
    assert m.state == "idle"  # reset after the hold had stopped: no ALARM:3, no unlock needed
    stats = sim.stop()
    assert stats["resets"] == 1
    ran = [cmd for _, cmd in sim.executed()]
    assert ran[-3:] == ["M5", "M9", "G4P0"]


def test_a_reset_asked_through_the_machine_is_expected_not_a_power_cut(start_sim, connect, circle):
    """`realtime("reset")` goes through the core (GrblProtocol.soft_reset), which then expects the
    banner: the machine is idle again, with no fault. Written as a raw byte it read as a power cut."""
    from afn_agent.machine import events as me

    sim = start_sim("grbl")
    m = connect(sim, "grbl-1.1")
    m.start_job(circle(3000, flavour="grbl"))
    under_way(m, 50)
    m.realtime("reset")
    r = m.wait_job(10)
    assert r.outcome == "failed" and r.code == "reset", r
    # moving when the reset came: GRBL locks (ALARM:3); on a loaded machine the stream may have run dry
    # and the axes stopped, and GRBL comes back unlocked: either way a banner, never a fault
    after = wait_for(lambda: m.state in ("alarm", "idle") and m.state, 10, "the banner after the reset")
    if after == "alarm":
        m.unlock()
    wait_for(lambda: m.state == "idle", 10, "idle after unlock")
    m.realtime("reset")  # idle: a reset loses nothing
    events: list[me.MachineEvent] = []

    def resets() -> list[me.FirmwareReset]:
        while not m.events.empty():
            events.append(m.events.get_nowait())
        return [e for e in events if isinstance(e, me.FirmwareReset)]

    wait_for(lambda: len(resets()) == 2, 10, "both banners")
    wait_for(lambda: m.state == "idle", 10, "idle after the second banner")
    assert not any(e.mid_job for e in resets()), resets()
    assert not [e for e in events if isinstance(e, me.Fault)], "an expected reset is not a fault"
    assert sim.stop()["resets"] == 2
