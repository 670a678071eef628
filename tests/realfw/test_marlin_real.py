"""The agent against real Marlin 2.1.2 (its Linux HAL behind a pty); Marlin's own command log is the truth.

Runs with MARLIN_RX_DROP=1 throughout: Marlin's serial input then drops bytes that find its 128-byte ring
full, as a real UART does, and counts them; the agent must never make it drop one.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest

from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.analyzer import analyze_path
from afn_agent.sim.jobs import circle_gcode
from tests.conftest import file_commands
from tests.helpers import wait_for
from tests.realfw.firmware import NoisyLink, TamperLink, command_text


def marlin(real_fw):
    return real_fw("marlin", MARLIN_RX_DROP="1")


def ran_numbered(fw) -> list[str]:
    """Commands Marlin ran from numbered lines (checksum good), without the agent's own M105/M155."""
    out = []
    for logged in fw.executed():
        if logged.startswith("N"):
            text = command_text(logged)
            if text not in ("M105", "M155 S2", "M400"):
                out.append(text)
    return out


def job_slice(ran: list[str], want: list[str]) -> list[str]:
    start = ran.index(want[0])
    return ran[start : start + len(want) + 2]


def filament_of(path) -> float:
    """What the quote's analyzer says the whole file extrudes."""
    return analyze_path(path, load_profile("marlin2")).material_mm


def running(m, path, lines: int = 50) -> None:
    """Start a job and wait until the firmware has answered its first lines (bounded, not forever)."""
    m.start_job(path)
    wait_for(lambda: m.snapshot()["lines_acked"] >= lines, 60, f"{lines} lines answered")


def test_ten_connects_cost_no_firmware_error_and_run_m115_once_each(real_fw, machine_on):
    fw = marlin(real_fw)
    for i in range(10):
        m = machine_on(fw.link)
        time.sleep(0.3)  # real time: late answers to the greeting would show as errors within this
        assert (m.core.errors, m.core.resends) == (0, 0), f"connect {i}: {m.core.errors} errors"
        m.close()
    log = [command_text(x) for x in fw.executed()]
    assert log.count("M115") == 10
    # the first connect may find Marlin's boot `start` still in the pty behind our M110: it greets again
    assert 10 <= log.count("M110 N0") <= 11
    assert fw.rx_dropped() == 0


def test_long_job_runs_every_line_once_in_order_and_is_counted_once(real_fw, machine_on, tmp_path):
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", 3000, feed=6000)
    m = machine_on(fw.link)
    m.start_job(path)
    r = m.wait_job(300)
    assert r.outcome == "completed", r
    want = file_commands(path)
    assert job_slice(ran_numbered(fw), want)[: len(want)] == want
    assert r.lines == len(want)
    assert r.material_mm == pytest.approx(filament_of(path), abs=1e-6)
    assert (r.resends, r.errors) == (0, 0)
    assert fw.rx_dropped() == 0


def noisy_job(real_fw, machine_on, tmp_path, segments, seed, drop_line=0.0, flow="window"):
    """A circle streamed to real Marlin over a line that flips 1 % of the bytes (and drops that share of
    lines): every line of the file ran once, in order, counted once, and the ring never overflowed."""
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", segments, feed=6000)
    base = load_profile("marlin2")
    link = NoisyLink(fw.link, flip=0.01, drop_line=drop_line, seed=seed).start()
    try:
        m = machine_on(link.port, replace(base, link=replace(base.link, flow=flow)))
        m.start_job(path)
        r = m.wait_job(240)
    finally:
        link.stop()
    assert r.outcome == "completed", r
    want = file_commands(path)
    ran = ran_numbered(fw)
    assert job_slice(ran, want)[: len(want)] == want
    assert ran.count(want[-1]) == 1
    assert r.lines == len(want)
    assert link.flipped > 0.008 * link.bytes and r.resends > 0
    assert fw.rx_dropped() == 0
    print(f"{flow} seed {seed}: {link.flipped} of {link.bytes} bytes flipped, {link.dropped} lines dropped, "
          f"{r.resends} resends, {r.seconds:.1f} s")  # fmt: skip
    return path, r


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_flipped_bytes_and_dropped_lines_every_line_executed_and_counted_once(
    real_fw, machine_on, tmp_path, seed
):
    path, r = noisy_job(real_fw, machine_on, tmp_path, 1000, seed, drop_line=0.005)  # drops: ~5 a run
    assert r.material_mm == pytest.approx(filament_of(path), abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_pingpong_with_flipped_bytes_every_line_executed_once(real_fw, machine_on, tmp_path, seed):
    """One line at a time (the pingpong flow) over a line flipping 1 % of the bytes: a line whose N is
    damaged reaches Marlin as an unknown command and draws an ok without N; nothing follows it, so the
    agent asks at once where Marlin is (a probe) and the line is resent, run once."""
    noisy_job(real_fw, machine_on, tmp_path, 600, seed, flow="pingpong")


def test_a_line_marlin_drops_as_a_copy_of_the_last_is_asked_for_and_run_once(real_fw, machine_on, tmp_path):
    """Real Marlin 2.1 drops, without a word, a line numbered like the one it took last (its guard against a
    resend already on the way). The job's closing M400, its number damaged so on the wire, drew no answer:
    the agent waited out long_command_s (30 min; one CI run timed out on it). Now one M105 goes behind a
    silent long command after ok_s; its number draws the Resend."""
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", 100, feed=6000)
    damaged: list[bytes] = []

    def number_of_the_line_before(line: bytes) -> bytes:
        m = re.match(rb"N(\d+) M400\*", line)
        if m is None or damaged:
            return line
        damaged.append(line)  # the digits change, the checksum stays: Marlin checks the number first
        return b"N%d" % (int(m[1]) - 1) + line[m.end(1) :]

    link = TamperLink(fw.link, to_firmware=number_of_the_line_before).start()
    base = load_profile("marlin2")
    try:
        m = machine_on(link.port, replace(base, link=replace(base.link, flow="pingpong")))
        m.start_job(path)
        r = m.wait_job(60)
    finally:
        link.stop()
    assert damaged and r is not None and r.outcome == "completed", r
    assert r.seconds < 3 * base.timeouts.ok_s
    ran = [command_text(x) for x in fw.executed()]
    assert ran.count("M400") == 1 and r.lines == len(file_commands(path))
    assert fw.rx_dropped() == 0


def test_a_probe_whose_answer_is_lost_is_followed_by_one_whose_answer_counts(real_fw, machine_on, tmp_path):
    """An ok lost (line 60's), then the answer to the probe that asked after it: the second probe's
    answer must count for that probe. Taken for the first, it left every later probe one answer behind and
    the job probed every ok_s for ever (seen twice against real Marlin, the answer lost on its side)."""
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", 100, feed=6000)
    dropped: list[bytes] = []

    def lose_two_answers(line: bytes) -> bytes | None:
        first = not dropped and line.startswith(b"ok N60 ")
        if first or (len(dropped) == 1 and line.startswith(b"ok T:")):
            dropped.append(line)
            return None
        return line

    link = TamperLink(fw.link, to_host=lose_two_answers).start()
    base = load_profile("marlin2")
    prof = replace(base, link=replace(base.link, flow="pingpong"), timeouts=replace(base.timeouts, ok_s=1.0))
    try:
        m = machine_on(link.port, prof)
        m.start_job(path)
        r = m.wait_job(30)
    finally:
        link.stop()
    assert len(dropped) == 2 and r is not None and r.outcome == "completed", (dropped, r)
    want = file_commands(path)
    assert job_slice(ran_numbered(fw), want)[: len(want)] == want and r.lines == len(want)
    assert fw.rx_dropped() == 0


def test_heat_waits_with_busy_keepalives_then_the_job_runs(real_fw, machine_on, tmp_path):
    fw = marlin(real_fw)
    path = tmp_path / "heat.gcode"
    # hot end only: the HAL's simulated bed overshoots and cools for minutes, so an M190 would wait that long
    path.write_text("M104 S50\nM109 S50\nG92 E0\nG1 X5 E1 F1200\nM104 S0\n")
    m = machine_on(fw.link)
    m.start_job(path)
    saw_heating = False
    deadline = time.monotonic() + 120
    while (r := m.wait_job(0.2)) is None and time.monotonic() < deadline:
        saw_heating = saw_heating or m.heating
    assert r is not None and r.outcome == "completed", r
    assert saw_heating
    ran = ran_numbered(fw)
    assert ran[-5:] == file_commands(path)
    assert m.temperatures["T"][0] >= 49


def test_emergency_stop_halts_marlin_at_once(real_fw, machine_on, tmp_path):
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", 3000, feed=600)  # slow: still moving when stopped
    m = machine_on(fw.link)
    running(m, path)
    m.emergency_stop("test")
    r = m.wait_job(10)
    assert r is not None and r.outcome == "failed" and r.code == "emergency-stop", r
    time.sleep(0.3)  # real time: M112 reaches the firmware
    halted_at = len(fw.executed())  # the emergency parser kills Marlin from its RX thread: nothing more runs
    time.sleep(1.5)  # real time: a firmware still running would execute more within this
    assert len(fw.executed()) == halted_at < 3000
    assert m.state == "fault"


def test_cancel_runs_the_cancel_script_and_leaves_marlin_ready(real_fw, machine_on, tmp_path):
    fw = marlin(real_fw)
    path = circle_gcode(tmp_path / "c.gcode", 2000, feed=600)
    m = machine_on(fw.link)
    running(m, path)
    m.cancel("test")
    r = m.wait_job(60)
    assert r.outcome == "cancelled", r
    ran = ran_numbered(fw)
    assert ran[-7:] == list(m.profile.scripts.cancel)
    assert m.state == "idle"
    short = circle_gcode(tmp_path / "s.gcode", 20, feed=6000)
    m.start_job(short)
    assert m.wait_job(60).outcome == "completed"
    assert fw.rx_dropped() == 0
