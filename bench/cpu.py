"""CPU per streamed line: what one more line costs the agent, the figure that decides how many machines a
Raspberry Pi can drive (issue 22).

    python bench/cpu.py                    # Marlin and GRBL, 1 and 4 machines, 115200 and 250000 baud
    python bench/cpu.py --quick            # Marlin 250000, 1 and 4 machines, smaller jobs
    python bench/cpu.py --quick --baud 115200   # the same rows at another baud rate
    python bench/cpu.py --printrun PYTHON  # also Printrun's printcore, in a Python that has it
    python bench/cpu.py --octoprint PYTHON # also OctoPrint's server (bench/octoprint_host.py)
    python bench/cpu.py --quick --against ../old   # the same rows for another checkout, interleaved
    python bench/cpu.py --quick --repeat 5 # five pairs of runs per row: the median, and the range
    python bench/cpu.py --floor            # what the OS charges a turn, and a bare host's CPU per line

The whole agent runs in a child process (the machine threads, the job pump and its ledger, the usage
analysis of every acknowledged line): each machine streams a job to a simulator in its own process,
paced at the baud rate. The child's user+sys CPU (getrusage, every thread) from the jobs' submission to
the machines' return to idle, for a long job minus that for a short one, over the difference in lines, is
the steady-state cost of a line: the per-job costs cancel, and start-up and shutdown are left out (taken
at the child's exit, as until 2026-12-06, they added tens of µs a line of noise). Printrun and OctoPrint
are measured at their process's exit, long minus short. A third run profiles every thread (cProfile on
the thread's CPU clock) and charges each function's own time to its module's stage: the shares split the
measured figure (the profiler's own overhead inflates small calls, so shares are a guide, not a
measurement). AFN_CPU_PSTATS=FILE also keeps that run's functions for `python -m pstats FILE`. The
same jobs' CPU by thread (each thread's scheduler clock in /proc) is exact; and for Marlin each round also
runs the bare C host of bench/least_host.c on the same simulator and job: what the operating system alone
charges a line, the floor the agent's figure is read against. Exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the agent measured: this checkout, or another one (--against) for a child started with AFN_CPU_TREE
sys.path.insert(0, os.environ.get("AFN_CPU_TREE", str(ROOT)))

from afn_agent.sim.jobs import circle_gcode  # noqa: E402
from afn_agent.sim.run import SimProcess  # noqa: E402
from bench.streaming import exactly_once  # noqa: E402

PROFILES = {"marlin": "marlin2", "grbl": "grbl-1.1"}
MOVE_MS = 0.5  # the planner outruns the link: the link is the limit, as in bench/streaming.py
# stage: the modules whose code, found first from the top of a thread's stack, is that stage's work
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ledger checkpoints", ("afn_agent/ledger/", "sqlite3")),
    ("acked-line analysis", ("afn_agent/gcode/",)),
    ("window and framing", ("afn_agent/firmware/window.py", "afn_agent/firmware/framing.py",
                            "afn_agent/machine/job.py", "afn_agent/machine/streaming.py")),
    ("firmware core", ("afn_agent/firmware/",)),
    ("serial read/write", ("afn_agent/machine/link.py", "serial/", "selectors.py")),
    ("events and pump", ("afn_agent/pump.py", "afn_agent/publisher.py", "afn_agent/machine/events.py",
                         "afn_agent/safety.py", "afn_agent/control.py", "queue.py")),
    ("machine loop", ("afn_agent/machine/",)),
)  # fmt: skip

THREAD_GROUPS = (
    ("machine threads", lambda name: name.startswith("machine-")),
    ("the pump", lambda name: name == "agent-pump"),
    ("the submitting thread (the quote's analysis)", lambda name: name == "MainThread"),
)  # fmt: skip


# ---- the child: one agent, N machines, one job each -------------------------------------------------
def worker(config: str, job: str, sample: bool) -> None:
    from afn_agent.agent import Agent
    from afn_agent.config import load_config
    from afn_agent.intake import submit
    from afn_agent.ledger.states import TERMINAL

    sampler = Sampler() if sample else None  # before any thread starts
    agent = Agent(load_config(config)).start()
    try:
        for m in agent.machines.values():
            if not m.wait_ready(30):
                raise SystemExit(f"{m.name} did not come up: {m.state} {m.last_error}")
        if sampler:
            sampler.start()
        at_start, threads_at_start = cpu_now(), thread_clocks()
        started = time.monotonic()
        for machine_id in agent.machines:
            submit(agent.config, agent.ledger, machine_id, job, "bench", held=False)
        for machine_id in agent.machines:
            if not agent.wait_idle(machine_id, 3600):
                raise SystemExit(f"{machine_id} never finished")
        seconds = time.monotonic() - started
        job_cpu_s = cpu_now() - at_start
        threads = {k: v - threads_at_start.get(k, 0.0) for k, v in thread_clocks().items()}
        jobs = [agent.ledger.jobs(m, TERMINAL)[0] for m in agent.machines]
        links = {m.name: {"bytes": m.result.bytes, "seconds": m.result.seconds, "baud": m.link.baud}
                 for m in agent.machines.values() if m.result is not None}  # fmt: skip
    finally:
        agent.stop()
        if sampler:
            sampler.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime, "job_cpu_s": job_cpu_s, "seconds": seconds,
                      "threads": threads,
                      "outcomes": [j["state"] for j in jobs], "links": links,
                      "stages": sampler.stages if sampler else {}}))  # fmt: skip


def thread_clocks() -> dict[str, float]:
    """Each live thread's CPU so far in seconds (the scheduler's clock in /proc: exact, where a sampled
    profile is not), summed by what the thread is for; {} off Linux. Here, not in bench/: a child may
    import another checkout's bench package (--against)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            ns = int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
        name = names.get(int(tid), "")
        group = next((g for g, test in THREAD_GROUPS if test(name)), "other threads")
        out[group] = out.get(group, 0.0) + ns / 1e9
    return out


def cpu_now() -> float:
    """The whole process's user+sys CPU so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """Each thread run under cProfile with its own CPU clock (time.thread_time: blocking costs nothing);
    every function's own time goes to its module's stage, a C function's to its callers' stages."""

    def __init__(self) -> None:
        import cProfile

        self.profiles: list[tuple[threading.Thread, cProfile.Profile]] = []
        self.stages: dict[str, float] = {}
        original = threading.Thread.run
        sampler = self

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)
            sampler.profiles.append((thread, profile))
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]

    def start(self) -> None:
        """The main thread too (it submits the jobs: the upload's analysis)."""
        import cProfile

        profile = cProfile.Profile(time.thread_time)
        self.profiles.append((threading.current_thread(), profile))
        profile.enable()

    def stop(self) -> None:
        import pstats

        me = threading.current_thread()
        # a profile is read in its own thread's terms only: the main thread's, and those of threads that
        # have ended (the agent's stop joins them); reading a live thread's from here would mix clocks
        done = [p for t, p in self.profiles if t is me or not t.is_alive()]
        combined = pstats.Stats(*done)
        if dump := os.environ.get("AFN_CPU_PSTATS"):  # the functions themselves, for `python -m pstats`
            combined.dump_stats(dump)
        stats = combined.stats  # type: ignore[attr-defined]
        for (path, _, func), (_, _, own, _, callers) in stats.items():
            if path != "~":
                self._charge(stage_of_path(path), own)
                continue
            if "_express.exchange" in func:  # in C, without the GIL: the port, the window, the oks
                self._charge("compiled exchange", own)
                continue
            if "select" in func or "posix.read" in func or "posix.write" in func:
                self._charge("serial read/write", own)
                continue
            total = sum(c[2] for c in callers.values()) or 1.0
            for (cpath, _, _), (_, _, tt, _) in callers.items():
                self._charge(stage_of_path(cpath), own * tt / total)

    def _charge(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


def stage_of_path(path: str) -> str:
    path = path.replace(os.sep, "/")
    for stage, parts in STAGES:
        if any(p in path for p in parts):
            return stage
    if "afn_agent/" in path:
        return "other agent code (" + path.split("afn_agent/")[1] + ")"
    return "other (" + path.rsplit("/", 1)[-1] + ")"


# ---- the parent --------------------------------------------------------------------------------------
def agent_run(kind: str, machines: int, baud: int, job: Path, work: Path, sample: bool = False,
              latency_ms: float = 0.0, sim_nice: int = 0, tree: str | None = None,
              agent_nice: int = 0) -> dict:  # fmt: skip
    """One child agent with `machines` machines streaming `job`; its CPU and how long the jobs took,
    each machine's link figures, and what each simulator saw (dropped bytes, every line once)."""
    run = Path(tempfile.mkdtemp(prefix=f"{kind}-{machines}-", dir=work))
    for i in range(machines):
        (run / f"sim{i}").mkdir()
    sims = [SimProcess(kind, run / f"sim{i}", baud=baud, move_ms=MOVE_MS, latency_ms=latency_ms).start()
            for i in range(machines)]  # fmt: skip
    for sim in sims:  # standing for separate hardware: the simulators are not what is measured
        if sim_nice and sim.proc is not None:
            os.setpriority(os.PRIO_PROCESS, sim.proc.pid, sim_nice)
    config = run / "agent.toml"
    config.write_text(agent_config(run, kind, baud, sims))
    try:
        cmd = [sys.executable, __file__, "--worker", str(config), "--job", str(job)]
        cmd += ["--sample"] if sample else []
        env = {**os.environ, **({"AFN_CPU_TREE": tree} if tree else {})}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, env=env,
                              preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, agent_nice))
                              if agent_nice else None)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"agent child failed: {done.stderr[-2000:]}")
        out: dict = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stats = [s.stop() for s in sims]
    out["dropped"] = sum(int(s.get("bytes_dropped", 0)) for s in stats)
    out["exact"] = all(exactly_once(kind, s, job) for s in sims)
    return out


def agent_config(run: Path, kind: str, baud: int, sims: list[SimProcess]) -> str:
    tariff = "laser" if kind == "grbl" else "printer"
    out = [f'[agent]\nsite = "bench"\nid = "cpu"\ndata_dir = "{run / "data"}"\n',
           f'[tariffs.{tariff}]\ncurrency = "EUR"\nper_active_minute = 0.10\n']  # fmt: skip
    for i, sim in enumerate(sims):
        out.append(f'[[machines]]\nid = "m{i}"\nclass = "bench"\nprofile = "{PROFILES[kind]}"\n'
                   f'port = "{sim.link}"\nbaud = {baud}\ntariff = "{tariff}"\n')  # fmt: skip
    return "\n".join(out)


def lines_of(path: Path) -> int:
    from afn_agent.gcode.lexer import wire_text

    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(1 for raw in f if wire_text(raw, parens=False))


def printrun_run(python: str, kind: str, baud: int, job: Path, work: Path) -> dict | None:
    """Printrun's printcore streaming the same file to the same simulator, in its own Python."""
    if kind != "marlin":
        return None
    run = Path(tempfile.mkdtemp(prefix="printrun-", dir=work))
    sim = SimProcess(kind, run, baud=baud, move_ms=MOVE_MS).start()
    try:
        done = subprocess.run([python, "-c", PRINTRUN, str(sim.link), str(baud), str(job)],
                              capture_output=True, text=True, timeout=7200)  # fmt: skip
        if done.returncode != 0:
            return {"error": done.stderr[-300:]}
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        sim.stop()


PRINTRUN = """
import json, resource, sys, time
from printrun.printcore import printcore
from printrun import gcoder
port, baud, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
core = printcore(port, baud)
deadline = time.time() + 30
while not core.online and time.time() < deadline:
    time.sleep(0.05)
lines = [l for l in open(path) if l.strip() and not l.startswith(';')]
started = time.monotonic()
core.startprint(gcoder.LightGCode(lines))
while core.printing:
    time.sleep(0.05)
seconds = time.monotonic() - started
core.disconnect()
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": u.ru_utime + u.ru_stime, "seconds": seconds, "outcomes": ["completed"]}))
"""


def cpu_of(run: dict) -> float:
    """The agent's CPU while its jobs ran (every thread); another host's, its whole process at exit."""
    return float(run.get("job_cpu_s", run["cpu_s"]))


def per_line(long: dict, short: dict, extra_lines: int) -> float:
    return (cpu_of(long) - cpu_of(short)) / extra_lines * 1e6


def host_row(host: str, kind: str, machines: int, baud: int, extra: int, short: dict, long: dict,
             spread: str = "") -> None:  # fmt: skip
    """One host's measured row: `extra` lines over all its machines, long job minus short job."""
    outcomes = ", ".join(sorted(set(long["outcomes"])))
    print(f"| {host} | {kind} | {machines} | {baud} | {extra // machines} | "
          f"{cpu_of(long) - cpu_of(short):.2f} | **{per_line(long, short, extra):.1f}**{spread} | "
          f"{long['seconds']:.1f} | {outcomes} |", flush=True)  # fmt: skip


def threads_table(rows: list[tuple[str, str, int, int, int, dict, dict, list[float]]]) -> None:
    """The median runs' CPU by thread (exact, from the scheduler), and what is left over the bare host's
    (the OS's share of writing a line and waiting for its answer, measured in the same rounds)."""
    groups = [g for g, _ in THREAD_GROUPS] + ["other threads"]
    print("\n## By thread (each thread's own clock over the jobs, long − short, µs per line; the median "
          "runs)\n")  # fmt: skip
    print(f"| host | machines | baud | {' | '.join(groups)} | all | over the bare C host |")
    print("|---|---|---|" + "---|" * (len(groups) + 2))
    for host, _, machines, baud, extra, short, long, floors in rows:
        cells = [(long.get("threads", {}).get(g, 0.0) - short.get("threads", {}).get(g, 0.0)) / extra * 1e6
                 for g in groups]  # fmt: skip
        floor_us = sorted(floors)[len(floors) // 2] if floors else None
        over = f"{per_line(long, short, extra) - floor_us:+.1f}" if floor_us is not None else ""
        print(f"| {host} | {machines} | {baud} | {' | '.join(f'{c:.1f}' for c in cells)} | "
              f"{per_line(long, short, extra):.1f} | {over} |")


def compile_bare(work: Path) -> Path | None:
    """bench/least_host.c built (None without a C compiler): the same-run baseline."""
    from bench import least_host  # here: a child measuring another checkout (--against) has none

    return least_host.compile_c(work)


def bare_run(binary: Path, baud: int, machines: int, lines: int, work: Path) -> float:
    """The bare C host's CPU per line (mean over its machines), watching the port for whole lines as the
    compiled exchange does, on the same simulator and job."""
    from bench import least_host

    outcomes, faults = least_host.run(baud, machines, least_host.WATCH_LINES, lines,
                                      Path(tempfile.mkdtemp(dir=work)), binary)  # fmt: skip
    if faults or not outcomes:
        raise RuntimeError(f"the bare C host lost or damaged lines ({faults} faults)")
    return sum(o.us_per_line for o in outcomes) / len(outcomes)


HOG = "import time\nwhile True:\n    time.monotonic()"


def contention(work: Path, lines: int) -> int:
    """Four machines at 115200 baud with 1 ms of USB latency while three CPU-bound processes run at
    normal priority on the same cores; the simulators run at a raised priority (they stand for the
    machines' own controllers), the agent at normal priority and then at the systemd unit's Nice=-5.
    What matters: each link stays full, no byte dropped, every line once."""
    job = circle_gcode(work / "contention.gcode", lines, 0.1, centre=(110, 110))
    print(f"# contention: 4 machines, 115200 baud, 1 ms latency, 3 CPU hogs on {os.cpu_count()} cores\n")
    print("| run | machine | link util | dropped B | every line once | outcome |\n|---|---|---|---|---|---|")
    runs = (("quiet", 0, 0), ("3 hogs, agent at nice 0", 3, 0),
            ("3 hogs, agent at Nice=-5 (the unit's)", 3, -5))  # fmt: skip
    for label, hogs, nice in runs:
        procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            r = agent_run("marlin", 4, 115200, job, work, latency_ms=1.0, sim_nice=-10, agent_nice=nice)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        for name, link in sorted(r["links"].items()):
            util = link["bytes"] * 10 / link["baud"] / link["seconds"]
            print(f"| {label} | {name} | {util:.3f} | {r['dropped']} | {'yes' if r['exact'] else 'NO'} | "
                  f"{', '.join(sorted(set(r['outcomes'])))} |", flush=True)  # fmt: skip
    return 0


def floor() -> int:
    """What the operating system charges a turn of the machine thread, before any Python of ours: a
    timer nap; a wake-up by a peer's bytes (a pipe's round trip); a line and its answer through a pty,
    with a peer that sleeps between them as a simulator does (its wake-up is charged to the writer)."""
    import pty
    import select
    import tty

    rounds = 3000
    r, w = os.pipe()
    started = time.thread_time()
    for _ in range(rounds):
        select.select([r], [], [], 0.0005)
    timer = (time.thread_time() - started) / rounds
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the peer: answers each byte after a pause, as a firmware answers a line
        for _ in range(rounds):
            os.read(a_r, 1)
            time.sleep(0.0003)
            os.write(b_w, b"ok\n")
        os._exit(0)
    started = time.thread_time()
    for _ in range(rounds):
        os.write(a_w, b"x")
        select.select([b_r], [], [], 1.0)
        os.read(b_r, 16)
    data = (time.thread_time() - started) / rounds
    os.waitpid(pid, 0)
    master, slave = pty.openpty()
    tty.setraw(slave)
    line = b"N1234 G1 X110.123 Y107.456 E12.34567*89\n"
    pid = os.fork()
    if pid == 0:  # a simulator's side of the pty: reads each line, answers it after a pause
        for _ in range(rounds):
            got = b""
            while not got.endswith(b"\n"):
                got += os.read(master, 4096)
            time.sleep(0.0003)
            os.write(master, b"ok N1234 P15 B3\n")
        os._exit(0)
    started = time.thread_time()
    for _ in range(rounds):
        os.write(slave, line)
        select.select([slave], [], [], 1.0)
        os.read(slave, 4096)
    port = (time.thread_time() - started) / rounds
    os.waitpid(pid, 0)
    for fd in (r, w, a_r, a_w, b_r, b_w, master, slave):
        os.close(fd)
    print("# what the OS charges one turn (thread CPU per call)\n\n| call | µs |\n|---|---|")
    print(f"| a 0.5 ms nap on a timer (select on a pipe) | {timer * 1e6:.1f} |")
    print(f"| a wake-up by a peer's bytes (write, select, read of a pipe round trip) | {data * 1e6:.1f} |")
    print(f"| a line written to a pty and its answer awaited and read (the same, through a pty) | "
          f"{port * 1e6:.1f} |")
    print("\n# the least a host pays per line: a bare host, the agent's window, the same simulator "
          "(bench/least_host.py)\n")
    from bench import least_host  # here: a child measuring another checkout (--against) has none

    return least_host.table()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--baud", type=int, default=250000, help="the quick rows' baud rate (default 250000)")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="pairs of runs per row (the median shown, with the range): the machine is noisy")
    p.add_argument("--printrun", metavar="PYTHON", help="a Python with Printrun installed")
    p.add_argument("--octoprint", metavar="PYTHON", help="a Python with OctoPrint installed (its server)")
    p.add_argument("--against", metavar="CHECKOUT",
                   help="another (built) checkout of afn-agent: its rows measured in the same run")
    p.add_argument("--contention", action="store_true",
                   help="only the contention run: 4 machines, 115200 baud, 1 ms latency, 3 CPU hogs")
    p.add_argument("--floor", action="store_true",
                   help="only the floor: what the OS charges a turn (a timer nap, a wake-up by bytes, a pty "
                        "write) and what a bare host pays per line (bench/least_host.py)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.job, args.sample)
        return 0
    if args.floor:
        return floor()
    work = Path(tempfile.mkdtemp(prefix="afn-cpu-"))
    if args.contention:
        return contention(work, 4000 if args.quick else 15000)
    short_n, long_n = (500, 4000) if args.quick else (1000, 15000)
    runs = [("marlin", 1, args.baud), ("marlin", 4, args.baud)]
    if not args.quick:
        runs += [("marlin", 1, 115200), ("marlin", 4, 115200), ("grbl", 1, 115200), ("grbl", 4, 115200)]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    flags = (" --quick" if args.quick else "") + (f" --baud {args.baud}" if args.baud != 250000 else "")
    flags += (f" --against {args.against}" if args.against else "") + f" --repeat {args.repeat}"
    flags += (" --printrun …" if args.printrun else "") + (" --octoprint …" if args.octoprint else "")
    print(f"# afn-agent CPU per streamed line\n\n`python bench/cpu.py{flags}`, {when}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}\n")  # fmt: skip
    print("| host | firmware | machines | baud | lines/machine (long − short) | CPU long − short (s) "
          "| µs per line | long job (s) | outcomes |")
    print("|---|---|---|---|---|---|---|---|---|")
    stages_rows, thread_rows = [], []
    bare = compile_bare(work)
    for kind, machines, baud in runs:
        files = {n: circle_gcode(work / f"{kind}-{n}.gcode", n, 0.1, centre=(110, 110))
                 for n in (short_n, long_n)}  # fmt: skip
        extra = (lines_of(files[long_n]) - lines_of(files[short_n])) * machines
        trees = ([args.against] if args.against else []) + [None]  # the other tree first, each round
        seen: dict[str | None, list[tuple[float, dict, dict]]] = {t: [] for t in trees}
        floors: list[float] = []
        for _ in range(args.repeat):  # interleaved: a noisy spell on the shared machine hits both
            for tree in trees:
                short = agent_run(kind, machines, baud, files[short_n], work, tree=tree)
                long = agent_run(kind, machines, baud, files[long_n], work, tree=tree)
                seen[tree].append((per_line(long, short, extra), short, long))
            if bare is not None and kind == "marlin":
                floors.append(bare_run(bare, baud, machines, long_n, work))
        for tree in trees:
            us, short, long = sorted(seen[tree], key=lambda r: r[0])[len(seen[tree]) // 2]  # the median
            spread = f" ({min(r[0] for r in seen[tree]):.0f}–{max(r[0] for r in seen[tree]):.0f})"
            host_row(tree or "afn-agent", kind, machines, baud, extra, short, long,
                     spread if args.repeat > 1 else "")  # fmt: skip
            thread_rows.append((tree or "afn-agent", kind, machines, baud, extra, short, long, floors))
        if floors:
            floors.sort()
            spread = f" ({floors[0]:.0f}–{floors[-1]:.0f})" if len(floors) > 1 else ""
            print(f"| bare C host (bench/least_host.c) | {kind} | {machines} | {baud} | {long_n} | | "
                  f"**{floors[len(floors) // 2]:.1f}**{spread} | | (the OS's share: no interpreter) |")
        if args.printrun and machines == 1:
            pr = [printrun_run(args.printrun, kind, baud, files[n], work) for n in (short_n, long_n)]
            if pr[0] and pr[1] and "error" not in pr[0] and "error" not in pr[1]:
                host_row("Printrun", kind, 1, baud, extra, pr[0], pr[1])
            elif pr[0]:
                why = (pr[0] or pr[1] or {}).get("error", "")[:80]
                print(f"| Printrun | {kind} | 1 | {baud} | | | failed: {why} | | |")
        if args.octoprint and machines == 1 and kind == "marlin":
            from bench.octoprint_host import octoprint_run  # the parent's only: a child may be another tree's

            op = octoprint_run(args.octoprint, baud, files, work, MOVE_MS)
            if "error" in op:
                print(f"| OctoPrint | {kind} | 1 | {baud} | | | failed: {op['error'][:100]} | | |")
            else:
                host_row("OctoPrint", kind, 1, baud, extra, op[short_n], op[long_n])
        if baud == args.baud:
            sampled = agent_run(kind, machines, baud, files[long_n], work, sample=True)
            stages_rows.append((kind, machines, baud, us, sampled["stages"]))
    threads_table(thread_rows)
    print("\n## Where a line's CPU goes (sampled run of the long job; shares of the sampled CPU × µs/line)\n")
    for kind, machines, baud, us, stages in stages_rows:
        total = sum(stages.values()) or 1.0
        print(f"\n{kind}, {machines} machine(s), {baud} baud: {us:.1f} µs per line\n")
        print("| stage | share | µs per line |\n|---|---|---|")
        rest = 0.0
        for stage, spent in sorted(stages.items(), key=lambda kv: -kv[1]):
            if spent / total < 0.01:
                rest += spent
                continue
            print(f"| {stage} | {spent / total:.1%} | {us * spent / total:.1f} |")
        print(f"| everything under 1 % each | {rest / total:.1%} | {us * rest / total:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
