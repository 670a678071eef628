"""About the least a host written in Python pays per streamed line on this machine: the floor under
bench/cpu.py's figures (issue 22). Its naps are fixed, not tuned: a cleverer bare host may do a little
better, no host that does more can do much better.

A bare host streams pre-framed lines to the same simulated Marlin as bench/cpu.py and does nothing else:
no parsing beyond finding `ok N<n> P<p> B<b>`, no job file, no events, no analysis. It keeps the
agent's flow-control rule (the bytes of lines not yet known to be in Marlin's command queue fit its
RX ring; ADVANCED_OK says which are) and either naps on a timer for a number of answers' wire time, as
the agent's pacer does, or watches the port, as a host without a pacer does, or lets the kernel wait
for whole lines (canonical mode, a blocking read: one wake-up per answer, by its last byte). What it
pays per line is the operating system's share of a turn times the turns per line the window leaves
room for: whatever the agent does per line comes on top.

The same bare host in C (bench/least_host.c, compiled here with the system's `cc`) says what is left
when no interpreter runs between the system's calls: the operating system's own share.

    python bench/least_host.py          # Marlin 250000 and 115200 baud, 1 and 4 machines
    python bench/least_host.py --quick  # 250000 baud, short jobs: a check that it runs (20 s)
    python bench/cpu.py --floor         # the same table after what the OS charges a turn
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: this checkout's afn_agent
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afn_agent.firmware.framing import frame
from afn_agent.firmware.marlin_lines import PLAIN_OK_RE
from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.lexer import wire_text
from afn_agent.sim.jobs import circle_gcode
from afn_agent.sim.run import SimProcess
from bench.cpu import MOVE_MS

NAP_SHARE = 0.97  # a nap ends this share of the answers' wire time after the last turn


@dataclass(frozen=True)
class Outcome:
    """One bare host's stream: its thread's CPU per line, the link's use, turns per line."""

    us_per_line: float
    utilisation: float
    turns_per_line: float


# Turns that are not naps: watch the port; block until the kernel has a whole line; (C host only) watch
# the port for whole lines, as a thread that can also be woken by a command would.
WATCH, WHOLE_LINES, WATCH_LINES = 0, -1, -2
TURNS = {
    WATCH: "watches the port",
    WHOLE_LINES: "waits for whole lines",
    WATCH_LINES: "watches for whole lines",
}


def stream(sim: SimProcess, wire: list[bytes], baud: int, answers_per_turn: int) -> Outcome:
    """Stream `wire` (framed lines, N1 onwards) to `sim`, napping for `answers_per_turn` answers, or
    WATCH (the port) or WHOLE_LINES (one blocking read of one whole line a turn)."""
    link = load_profile("marlin2").link
    room, depth = link.rx_buffer - 1, link.queue_depth
    fd = os.open(str(sim.link), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    try:
        _handshake(fd)
        if answers_per_turn == WHOLE_LINES:
            _whole_lines(fd)
        byte_s = 10 / baud
        nap = answers_per_turn * len(wire[len(wire) // 2]) * byte_s * NAP_SHARE
        sent = queued = answered = turns = 0  # lines written, known to be in the queue, answered
        pending = b""
        ring = 0  # bytes of the lines written and not known to be in the queue
        started, cpu = time.monotonic(), time.thread_time()
        while answered < len(wire):
            out = []
            while sent < len(wire) and (ring + len(wire[sent]) <= room or sent == queued):
                out.append(wire[sent])
                ring += len(wire[sent])
                sent += 1
            if out:
                os.write(fd, b"".join(out))
            turns += 1
            if answers_per_turn > 0:
                time.sleep(nap)
            elif answers_per_turn == WATCH:
                select.select([fd], [], [], 1.0)
            try:
                pending += os.read(fd, 4096)
            except BlockingIOError:
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if (ok := PLAIN_OK_RE.match(line)) is None:
                    continue
                answered = max(answered, int(ok[1]))
                inside = min(int(ok[1]) + depth - int(ok[3]) - 1, sent)  # the agent's rule (marlin.py)
                while queued < inside:
                    queued += 1
                    ring -= len(wire[queued - 1])
        cpu, seconds = time.thread_time() - cpu, time.monotonic() - started
    finally:
        os.close(fd)
    wire_s = sum(map(len, wire)) * byte_s
    return Outcome(cpu / len(wire) * 1e6, wire_s / seconds, turns / len(wire))


def stream_c(
    binary: Path, sim: SimProcess, wire_file: Path, wire: list[bytes], baud: int, per_turn: int
) -> Outcome:
    """The same stream by the bare host in C, a process of its own (its CPU is the whole process's)."""
    link = load_profile("marlin2").link
    byte_s = 10 / baud
    nap_us = per_turn  # WATCH, WHOLE_LINES and WATCH_LINES are the C host's 0, -1 and -2
    if per_turn > 0:
        nap_us = round(per_turn * len(wire[len(wire) // 2]) * byte_s * NAP_SHARE * 1e6)
    args = [str(binary), str(sim.link), str(wire_file), str(baud), str(nap_us), str(link.rx_buffer - 1)]
    p = subprocess.run([*args, str(link.queue_depth)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"the C host failed: {p.stderr.strip()}")
    us, seconds, turns = p.stdout.split()
    wire_s = sum(map(len, wire)) * byte_s
    return Outcome(float(us), wire_s / float(seconds), int(turns) / len(wire))


def compile_c(work: Path) -> Path | None:
    """bench/least_host.c built with the system's C compiler; None (said why) without one."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("(no C compiler: the C host's rows are left out)")
        return None
    binary = work / "least_host_c"
    source = Path(__file__).with_name("least_host.c")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def _whole_lines(fd: int) -> None:
    """Canonical mode with nothing else of it: the kernel wakes a reader at a line's end only, and a read
    returns one line. No echo, no signals, no editing characters (0 disables each), no CR/NL mapping."""
    attrs = termios.tcgetattr(fd)
    attrs[3] = (attrs[3] | termios.ICANON) & ~(termios.ECHO | termios.ISIG | termios.IEXTEN)
    for c in (termios.VEOF, termios.VEOL, termios.VEOL2, termios.VERASE, termios.VKILL, termios.VWERASE,
              termios.VREPRINT, termios.VLNEXT, termios.VINTR, termios.VQUIT, termios.VSUSP):  # fmt: skip
        attrs[6][c] = b"\0"
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    os.set_blocking(fd, True)


def _handshake(fd: int) -> None:
    """Let the simulator's start-up chatter pass, then number lines from 1 (M110 N0)."""
    seen = b""
    deadline = time.monotonic() + 10
    os.write(fd, b"M110 N0\n")
    while not any(line.startswith(b"ok") for line in seen.split(b"\n")[:-1]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer to M110 from the simulator: {seen[-200:]!r}")
        select.select([fd], [], [], 0.2)
        with contextlib.suppress(BlockingIOError):
            seen += os.read(fd, 4096)


def run(
    baud: int, machines: int, per_turn: int, lines: int, work: Path, c_host: Path | None = None
) -> tuple[list[Outcome], int]:
    """`machines` bare hosts, a thread each in this process (as the agent's machine threads), or with
    `c_host` a process each of the C host; their outcomes, and the faults: line errors, resends and
    dropped bytes at the simulators, hosts that failed."""
    job = circle_gcode(work / f"least-{lines}.gcode", lines, 0.1, centre=(110, 110))
    with open(job, encoding="utf-8") as f:  # the lines the agent would send, by its own reading
        texts = [text for raw in f if (text := wire_text(raw, parens=False))]
    wire = [frame(i + 1, text) for i, text in enumerate(texts)]
    (wire_file := work / f"least-{lines}.wire").write_bytes(b"".join(wire))
    sims: list[SimProcess] = []
    results: list[Outcome] = []
    try:
        for i in range(machines):
            (d := work / f"sim-{baud}-{machines}-{per_turn}-{'c' if c_host else 'py'}-{i}").mkdir()
            sims.append(SimProcess("marlin", d, baud=baud, move_ms=MOVE_MS).start())
        time.sleep(1.0)  # real time: the simulators' start-up banners, not counted
        def host(sim: SimProcess) -> None:
            if c_host is None:
                results.append(stream(sim, wire, baud, per_turn))
            else:
                results.append(stream_c(c_host, sim, wire_file, wire, baud, per_turn))

        threads = [threading.Thread(target=host, args=(s,)) for s in sims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stats = [sim.stop() for sim in sims]
    faults = machines - len(results)  # a host that raised (its thread printed why)
    for counters in stats:
        keys = ("line_errors", "bytes_dropped", "resend_requests")
        faults += sum(counters[k] for k in keys) if all(k in counters for k in keys) else 1
    return results, faults


def table(bauds: tuple[int, ...] = (250000, 115200), lines: int = 3000) -> int:
    """Print the floor's table; 1 if a bare host lost or damaged a line (the floor would mean nothing)."""
    work = Path(tempfile.mkdtemp(prefix="afn-least-"))
    print("| baud | machines | turn | µs per line (CPU: the thread's, the C host's process's) "
          "| link utilisation | turns per line |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    failed = 0
    c_host = compile_c(work)
    rows = [(1, WATCH, None), (1, WHOLE_LINES, None), (1, 1, None), (1, 2, None), (4, 1, None)]
    if c_host is not None:
        rows += [(1, WHOLE_LINES, c_host), (1, WATCH_LINES, c_host), (1, 1, c_host)]
        rows += [(4, WATCH_LINES, c_host), (4, 1, c_host)]
    for baud in bauds:
        for machines, per_turn, binary in rows:
            got, faults = run(baud, machines, per_turn, lines, work, binary)
            failed += faults
            if not got:
                continue
            how = f"naps for {per_turn} answer{'s' * (per_turn > 1)}" if per_turn > 0 else TURNS[per_turn]
            how = f"in C, {how}" if binary else how
            us = sorted(o.us_per_line for o in got)
            util = min(o.utilisation for o in got)
            print(f"| {baud} | {machines} | {how} | {us[len(us) // 2]:.1f} | {util:.3f} "
                  f"| {max(o.turns_per_line for o in got):.2f} |")  # fmt: skip
    if failed:
        print(f"\n{failed} line errors, resends, dropped bytes or failed hosts: the bare host is wrong, "
              "not the floor")
    return 1 if failed else 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="250000 baud only, short jobs (a check that it runs)")
    args = p.parse_args()
    raise SystemExit(table((250000,), 400) if args.quick else table())
