"""The full path against the simulated Marlin: port, thread, core, window, sim firmware."""

import time
from pathlib import Path

import pytest

from afn_agent.firmware.profile import load_profile
from tests.conftest import file_commands
from tests.helpers import profile, under_way, wait_for

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
HOST_PROBES = {"M105", "M155 S2"}  # the agent's own watchdog probes and autoreport request


def job_lines(sim, path):
    """The executed log restricted to the job: what the firmware ran between start and M400."""
    want = file_commands(path)
    ran = [cmd for label, cmd in sim.executed() if label not in ("-", "0") and cmd not in HOST_PROBES]
    start = ran.index(want[0])
    return ran[start : start + len(want)], want, ran


def test_clean_stream_runs_every_line_once_in_order(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim)
    path = circle(1500)
    m.start_job(path)
    r = m.wait_job(60)
    stats = sim.stop()
    assert r.outcome == "completed", r
    got, want, _ = job_lines(sim, path)
    assert got == want
    assert stats["bytes_dropped"] == 0 and r.resends == 0
    assert m.loop.express_sent > 0.9 * len(want)  # the plain moves went by the compiled exchange


def test_the_python_path_alone_streams_the_same(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim)
    m.loop.express = False
    path = circle(600)
    m.start_job(path)
    r = m.wait_job(60)
    sim.stop()
    assert r.outcome == "completed", r
    got, want, _ = job_lines(sim, path)
    assert got == want and m.loop.express_sent == 0


def test_a_bad_line_after_plain_moves_fails_the_job_naming_it_and_nothing_after_runs(start_sim, connect, tmp_path):
    sim = start_sim("marlin")
    m = connect(sim)
    path = tmp_path / "bad.gcode"
    moves = [f"G1 X{i % 50}.5 Y{i % 40}.25 F3000" for i in range(300)]
    path.write_text("\n".join([*moves, "G1 X1 ;" + "", "M117 " + "x" * 200, "G1 X2"]) + "\n")
    m.start_job(path)
    r = m.wait_job(60)
    assert (r.outcome, r.code) == ("failed", "bad-file"), r
    assert f"{path}:302:" in r.reason and "longer than the firmware" in r.reason
    time.sleep(0.5)  # real time: lines still queued when the job failed would be written meanwhile
    assert m.state == "idle"
    sim.stop()
    ran = [cmd for label, cmd in sim.executed() if label not in ("-", "0")]
    assert moves[0] in ran and "G1 X2" not in ran  # what follows the bad line never goes
    assert r.lines <= 301


def test_corrupted_lines_are_resent_and_every_line_runs_exactly_once(start_sim, connect, circle):
    sim = start_sim("marlin", corrupt=0.03, seed=7, latency_ms=1.0)
    m = connect(sim)
    path = circle(1500)
    m.start_job(path)
    r = m.wait_job(90)
    stats = sim.stop()
    assert r.outcome == "completed", r
    assert stats["lines_corrupted"] > 20 and r.resends > 20
    got, want, _ = job_lines(sim, path)
    assert got == want
    numbers = [int(label) for label, _ in sim.executed() if label.isdigit() and label != "0"]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))


def test_lost_oks_are_recovered_without_repeating_lines(start_sim, connect, circle):
    sim = start_sim("marlin", lost_ok=0.01, seed=3, advanced_ok=False)
    m = connect(sim, profile("marlin2", ok_s=0.5))
    path = circle(600)
    m.start_job(path)
    r = m.wait_job(90)
    stats = sim.stop()
    assert r.outcome == "completed", r
    assert stats["oks_lost"] > 0
    assert job_lines(sim, path)[0] == file_commands(path)


def test_lost_oks_with_advanced_ok_resync_without_probes(start_sim, connect, circle):
    sim = start_sim("marlin", lost_ok=0.02, seed=5)
    m = connect(sim, profile("marlin2", ok_s=30.0))
    path = circle(600)
    t0 = time.monotonic()
    m.start_job(path)
    r = m.wait_job(60)
    sim.stop()
    assert r.outcome == "completed", r
    assert time.monotonic() - t0 < 20  # never waited for the 30 s watchdog
    assert job_lines(sim, path)[0] == file_commands(path)


def test_printer_reset_mid_job_fails_the_job(start_sim, connect, circle):
    sim = start_sim("marlin", reset_at=300)
    m = connect(sim)
    m.start_job(circle(1500))
    r = m.wait_job(60)
    assert r.outcome == "failed" and r.code == "firmware-reset", r
    assert "restarted mid-job" in r.reason
    assert m.state == "fault"


def test_usb_unplug_fails_the_job_and_the_machine_comes_back_on_replug(start_sim, connect, circle):
    sim = start_sim("marlin", disconnect_at=300, replug_s=1.0)
    m = connect(sim, reconnect_s=0.3)
    m.start_job(circle(1500))
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "link-lost", r
    assert "vanished" in r.reason
    deadline = time.monotonic() + 15
    while m.state != "idle" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.state == "idle"
    path = circle(200)
    m.start_job(path)
    assert m.wait_job(30).outcome == "completed"


def test_thermal_runaway_fails_the_job(start_sim, connect, circle):
    sim = start_sim("marlin", thermal_runaway_at=200)
    m = connect(sim)
    m.start_job(circle(1500))
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "thermal-runaway", r


def test_silent_printer_is_probed_then_faulted(start_sim, connect, circle):
    sim = start_sim("marlin", stall_at=100)
    m = connect(sim, profile("marlin2", ok_s=0.5, probes=2))
    m.start_job(circle(1500))
    r = m.wait_job(30)
    assert r.outcome == "failed" and r.code == "no-answer", r


def test_emergency_stop_reaches_the_firmware_mid_stream(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim)
    path = circle(3000)
    m.start_job(path)
    under_way(m, 200)
    time.sleep(0.2)  # mid-burst of the compiled exchange: answers it read are not counted yet
    delay = m.emergency_stop("test")
    r = m.wait_job(10)
    time.sleep(0.3)  # real time: the bytes already on the wire go first, then M112 (no signal to wait on)
    stats = sim.stop()
    assert 0 <= delay < 0.05
    assert r.outcome == "failed" and r.code == "emergency-stop"
    assert stats["halted"] == "emergency stop (M112)"
    ran = len(job_lines(sim, path)[0])
    assert ran - 24 <= r.lines <= ran + 24, (r.lines, ran)  # billed: what was answered, a burst's oks too


def test_cancel_runs_the_cancel_script(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim)
    m.start_job(circle(3000))
    under_way(m, 100)
    m.cancel("member")
    r = m.wait_job(10)
    sim.stop()
    assert r.outcome == "cancelled" and r.reason == "member", r
    ran = [cmd for _, cmd in sim.executed()]
    script = list(load_profile("marlin2").scripts.cancel)
    assert ran[-len(script) - 2 :] == [*script, "M400", "M105"]
    assert r.lines < 2500


def test_pause_stops_feeding_and_resume_finishes(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim)
    path = circle(2000)
    m.start_job(path)
    under_way(m, 50)
    m.pause()
    time.sleep(0.3)  # real time: the lines already in the firmware's buffer are answered
    acked = m.snapshot()["lines_acked"]
    time.sleep(0.5)  # real time: nothing more is fed while paused
    assert m.state == "paused" and m.snapshot()["lines_acked"] == acked
    m.resume()
    r = m.wait_job(30)
    sim.stop()
    assert r.outcome == "completed"
    ran = [cmd for _, cmd in sim.executed()]
    unpark = ran.index("G1 Z-5 F600")
    assert "G1 Z5 F600" in ran[:unpark]  # the park script ran before
    # then the job's own modes come back: the script's G90 made E absolute and set F600
    assert ran[unpark + 1 : unpark + 5] == ["G90", "G90", "M83", "G1 F3000"]


def test_pingpong_profile_without_line_numbers(start_sim, connect, circle):
    sim = start_sim("marlin")
    m = connect(sim, "smoothieware")
    path = circle(300)
    m.start_job(path)
    r = m.wait_job(30)
    sim.stop()
    assert r.outcome == "completed"
    ran = [cmd for label, cmd in sim.executed() if label == "-"]
    assert ran[ran.index(file_commands(path)[0]) :][: len(file_commands(path))] == file_commands(path)


def test_temperatures_are_reported_by_autoreport(start_sim, connect, circle):
    sim = start_sim("marlin", speed=50.0)
    m = connect(sim)
    path = circle(100)
    path.write_text("M104 S200\nM109 S200\n" + path.read_text())
    m.start_job(path)
    assert m.wait_job(30).outcome == "completed"
    wait_for(lambda: m.temperatures["T"][1] == 200.0 and m.temperatures["T"][0] > 190, 5, "an autoreport")


def test_material_is_counted_from_acknowledged_lines_by_the_quote_analyzer(start_sim, connect):
    from pathlib import Path

    from afn_agent.gcode.analyzer import analyze_path

    path = Path(__file__).resolve().parents[1] / "data" / "corpus" / "superslicer-2.3.56_arcfit.gcode"
    quote = analyze_path(path, load_profile("marlin2"))
    sim = start_sim("marlin", baud=1_000_000, move_ms=0.05, speed=1000.0)
    m = connect(sim)
    m.start_job(path)
    r = m.wait_job(120)
    assert r.outcome == "completed", r
    assert r.material_mm == pytest.approx(quote.material_mm, rel=1e-9)
    assert r.material_g == pytest.approx(quote.material_g, rel=1e-9)
    assert r.estimated_s == pytest.approx(quote.estimated_s, rel=1e-6)


def test_a_cancelled_job_bills_only_what_was_acknowledged(start_sim, connect):
    from pathlib import Path

    from afn_agent.gcode.analyzer import analyze_path

    path = Path(__file__).resolve().parents[1] / "data" / "corpus" / "superslicer-2.3.56_arcfit.gcode"
    total = analyze_path(path, load_profile("marlin2")).material_mm
    sim = start_sim("marlin", speed=1000.0)
    m = connect(sim)
    m.start_job(path)
    used_so_far = wait_for(lambda: m.snapshot()["material_mm_used"], 10, "material used so far")
    m.cancel("member")
    r = m.wait_job(30)
    assert r.outcome == "cancelled"
    assert 0 < used_so_far <= r.material_mm < total


def test_the_express_path_bills_what_the_python_path_bills(start_sim, connect, tmp_path):
    """The bursts' answered lines reach the job's analyzer in one call each (LinesAcked): the same
    material, time and lines as line by line, on the head of a real PrusaSlicer file (moves, arcs,
    M486, G92 E0, fan and temperature commands between the moves)."""
    corpus = CORPUS / "prusaslicer-2.4.0a1_arcfit_m486.gcode"
    if not corpus.exists():
        pytest.skip("no ../shared/corpus here")
    waits = ("M109", "M190", "print_start", "TIMELAPSE")  # heating waits and Klipper macros left out
    path = tmp_path / "head.gcode"
    path.write_text("\n".join([x for x in corpus.read_text().splitlines() if not x.startswith(waits)][:2500]))
    results = []
    for express in (True, False):
        sim = start_sim("marlin")
        m = connect(sim)
        m.loop.express = express
        m.start_job(path)
        results.append((m.wait_job(120), m.loop.express_sent))
        sim.stop()
    (fast, sent), (slow, none) = results
    assert fast.outcome == slow.outcome == "completed" and sent > 1000 and none == 0
    assert (fast.lines, fast.material_mm, fast.estimated_s) == (slow.lines, slow.material_mm, slow.estimated_s)
    assert fast.used == slow.used
