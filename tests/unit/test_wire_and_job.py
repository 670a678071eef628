"""The simulator's wire model, its ring, and the job file reader."""

import os
import time
from pathlib import Path

import pytest

from afn_agent.gcode.lexer import wire_text
from afn_agent.machine.job import JobError, JobFile
from afn_agent.sim.core import SimOptions
from afn_agent.sim.marlin import MarlinSim
from afn_agent.sim.wire import Wire
from tests.helpers import wait_for


def test_wire_paces_bytes_at_ten_bits_each_plus_latency():
    w = Wire(1000, latency_s=0.5)  # 100 bytes/s
    w.push(b"abc", 0.0)
    w.push(b"de", 0.01)  # queued behind abc
    assert w.next_arrival() == pytest.approx(0.51)
    assert w.take_until(0.515) == b"a"
    assert w.take_until(0.55) == b"bcde"  # b at .52 ... e at .55
    assert w.next_arrival() == float("inf")
    assert w.busy_time == pytest.approx(0.05)


def test_simulated_ring_drops_what_a_host_without_flow_control_pours_in(tmp_path):
    """The drop counter the benchmarks rely on can see an overflow."""
    sim = MarlinSim(tmp_path / "m.tty", SimOptions(baud=1_000_000, move_ms=50.0, boot_s=0))
    sim.start_thread()
    fd = os.open(tmp_path / "m.tty", os.O_RDWR | os.O_NOCTTY)
    try:
        for i in range(200):
            os.write(fd, f"G1 X{i} Y{i}\n".encode())
        wait_for(lambda: sim.stats.bytes_dropped > 0, 5, "bytes dropped by the ring")
    finally:
        sim.stop()
        time.sleep(0.1)
        os.close(fd)
    assert sim.stats.bytes_dropped > 0


def test_job_file_strips_comments_keeps_messages_and_tracks_lines(tmp_path):
    f = tmp_path / "j.gcode"
    f.write_text("; header\n\nG28 ; home\nM117 Layer 1; of 20\n(paren) G1 X1 (mid) Y2\n%\nG1 X2\n")
    job = JobFile(f, parens=True)
    out = []
    while (item := job.next_command()) is not None:
        out.append((item[0], item[1].line))
    assert out == [("G28", 3), ("M117 Layer 1; of 20", 4), ("G1 X1 Y2", 5), ("G1 X2", 7)]
    assert job.offset == f.stat().st_size
    job.close()


@pytest.mark.parametrize("parens", [True, False])
def test_job_file_sends_what_the_lexer_says_and_keeps_the_notes(tmp_path, parens):
    """Lines without `;`, `(` or `%` skip the lexer's rules (the hot path): what goes out, and the note a
    prompt shows, are still what those rules give for every kind of line."""
    lines = ["G1 X1 Y2", "  g1   x1  ", "M117 Printing", "G1 X3 ; move", "(tool) T1 M6", "%", "",
             "\tM0 Remove the brim\r", "; change the colour", "M600", "N5 G1 X1*33", "M400 (done"]  # fmt: skip
    f = tmp_path / "mixed.gcode"
    f.write_text("\n".join(lines) + "\n")
    job = JobFile(f, parens=parens)
    out = []
    while (item := job.next_command()) is not None:
        out.append((item[0], job.note))
    job.close()
    sent = [wire_text(raw, parens=parens) for raw in lines]
    assert [text for text, _ in out] == [t for t in sent if t]
    notes = dict(out)
    assert notes["M600"] == "change the colour" and notes["G1 X1 Y2"] == ""
    if parens:
        assert notes["T1 M6"] == "tool"


def test_job_file_refuses_a_line_the_firmware_cannot_hold(tmp_path):
    f = tmp_path / "long.gcode"
    f.write_text("G28\nG1 " + "X1" * 60 + "\n")
    job = JobFile(f, max_line=80)
    job.next_command()
    with pytest.raises(
        JobError, match=r"long.gcode:2: command is 123 characters, longer than the firmware's 80"
    ):
        job.next_command()
    job.close()


def test_a_burst_read_stops_before_the_long_line_and_raises_at_the_next(tmp_path):
    """The machine thread reads a burst's commands in one call: those before a line too long come
    back (they are sent), the next call names the line, and nothing after it is ever read."""
    f = tmp_path / "burst.gcode"
    f.write_text("G28\n; a note\nG1 X1\nG1 " + "X1" * 60 + "\nG1 X2\n")
    job = JobFile(f, max_line=80)
    got = job.read_commands(10)
    assert [(t, p.line, note) for t, p, note in got] == [("G28", 1, ""), ("G1 X1", 3, "a note")]
    for _ in range(2):
        with pytest.raises(JobError, match=r"burst.gcode:4: command is 123 characters"):
            job.read_commands(10)
    assert job.line_no == 4 and job.commands == 2
    job.close()


def test_missing_job_file_is_named(tmp_path):
    with pytest.raises(JobError, match=r"nope\.gcode: cannot open"):
        JobFile(tmp_path / "nope.gcode")


def test_simulator_stops_promptly_when_nobody_reads_its_replies(tmp_path):
    """With the host's port closed and the pty buffer full, writes are lost, never waited on."""
    sim = MarlinSim(tmp_path / "m.tty", SimOptions(baud=1_000_000, boot_s=0, rx_buffer=1 << 16))
    thread = sim.start_thread()
    fd = os.open(tmp_path / "m.tty", os.O_RDWR | os.O_NOCTTY)
    os.write(fd, b"M155 S1\n" + b"M105\n" * 2000)  # thousands of replies that nobody will read
    time.sleep(1.0)  # real time: the simulator fills the pty buffer with replies
    os.close(fd)
    t0 = time.monotonic()
    sim.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - t0 < 2
    assert sim.stats.tx_lost > 0


def _read_all(path, n, **kw):
    job = JobFile(path, **kw)
    out, error = [], ""
    while not job.done:
        try:
            got = job.read_commands(n)
        except JobError as exc:
            error = str(exc)
            break
        out += [(text, pos.line, pos.offset, note) for text, pos, note in got]
    job.close()
    return out, error, job.line_no, job.offset, job.commands


def _by_the_rules_only(block, pos, n, max_line, line_no, offset, pos_type):
    return [], pos, line_no, offset  # the compiled reader takes nothing: every line goes by the rules


CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
ODD = ["G1 X1", "  g1 x2\t", "", "\r", "G1 X3\r", "\x1cG1 X4\x1f", "M117 hi", "m117", "G1 ; c", "(p) G1 X5",
       "%", "G1 Xé", "\x00G1", "G1 " + "Y" * 90, "N7 G1 X1*40", " \x0b\x0c ", "M0 Press (go)"]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_reader_gives_what_the_line_rules_give(tmp_path, monkeypatch, seed):
    """Plain lines go by _jobfile.c, any other by the lexer's rules in Python: over odd lines (blanks
    str.strip() removes, CRs, non-ASCII, comments, M117, a line too long, no final newline) and blocks
    cut anywhere, the texts, positions, notes and errors are those of the rules alone."""
    import random

    from afn_agent.machine import job as job_module

    rng = random.Random(seed)
    f = tmp_path / "odd.gcode"
    lines = [rng.choice(ODD) if rng.random() < 0.4 else f"G1 X{rng.random():.3f}" for _ in range(400)]
    f.write_bytes(("\n".join(lines) + ("\n" if seed % 2 else "")).encode())
    for block in (1, 7, 64, 1 << 16):
        monkeypatch.setattr(job_module, "BLOCK", block)
        for n in (1, 5, 128):
            got = _read_all(f, n, max_line=80, parens=bool(seed % 3))
            with monkeypatch.context() as m:
                m.setattr(job_module, "plain_commands", _by_the_rules_only)
                want = _read_all(f, n, max_line=80, parens=bool(seed % 3))
            assert got == want, (block, n)


def test_the_compiled_reader_reads_real_slicer_files_as_the_rules_do(monkeypatch):
    from afn_agent.machine import job as job_module

    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".gcode", ".nc"))
    assert files
    for path in files:
        got = _read_all(path, 128, max_line=200)
        monkeypatch.setattr(job_module, "plain_commands", _by_the_rules_only)
        assert got == _read_all(path, 128, max_line=200), path.name
        monkeypatch.undo()
        assert got[3] == path.stat().st_size or got[1], path.name  # read to the end, or stopped by a line


def test_a_line_longer_than_many_blocks_is_read_whole(tmp_path, monkeypatch):
    """A 200 KB comment (a thumbnail block on one line, say) over 64-byte blocks: gathered in pieces,
    it is one line, its text the next command's note, and the positions after it right."""
    from afn_agent.machine import job as job_module

    monkeypatch.setattr(job_module, "BLOCK", 64)
    f = tmp_path / "long-comment.gcode"
    head = "; " + "a" * 200_000 + "\n"
    f.write_text(f"G28\n{head}G1 X1\nG1 X2")
    got = JobFile(f).read_commands(10)
    assert [(t, p.line, p.offset, note[:3]) for t, p, note in got] == [
        ("G28", 1, 4, ""), ("G1 X1", 3, 4 + len(head) + 6, "aaa"), ("G1 X2", 4, f.stat().st_size, "")]  # fmt: skip
