"""The `afn-agent` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .firmware.profile import ProfileError, available_profiles, load_profile
from .gcode.analyzer import Analysis
from .machine.worker import JobResult, Machine
from .startup import Exit

BAR_FROM_BYTES = 20 << 20  # files this large get a progress bar on a terminal


def keys_joined(argv: list[str]) -> list[str]:
    """`--key -Xb…` read as `--key=-Xb…`: argparse takes a value starting with `-` for an option, and
    one key in 64 made before keys stopped starting with `-` does."""
    out: list[str] = []
    for word in argv:
        if out and out[-1] == "--key" and word.startswith("-") and not word.startswith("--"):
            out[-1] = f"--key={word}"
        else:
            out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="afn-agent", description="Machine-side agent for fab labs.",
        epilog="Exit codes: " + "; ".join(f"{int(e)} {e.name.lower().replace('_', ' ')}" for e in Exit),
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stream", help="stream a G-code file to a machine and wait for the end")
    s.add_argument("file", help="the G-code file")
    s.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0 or /dev/afn/printer-1")
    s.add_argument("--profile", required=True, help="firmware profile name or .toml path")
    s.add_argument("--baud", type=int, help="override the profile's baud rate")
    s.add_argument("--json", action="store_true", help="print one JSON object at the end")
    s.add_argument("--connect-timeout", type=float, default=20.0,
                   help="seconds to wait for the firmware's greeting (default 20)")  # fmt: skip

    from .sim.run import add_arguments as sim_arguments

    sim = sub.add_parser("sim", help="run a simulated firmware on a pseudo-terminal")
    sim_arguments(sim)

    pf = sub.add_parser("profiles", help="list the firmware profiles found")
    pf.add_argument("--json", action="store_true", help="one JSON array, an object per profile")

    a = sub.add_parser("analyze", help="what a job will take: time, material, bounds, beam, policy")
    a.add_argument("file", help="the G-code file")
    a.add_argument("--profile", help="machine profile: its limits, volume and forbidden commands")
    a.add_argument("--json", action="store_true", help="print one JSON object")

    d = sub.add_parser("demo", help="stream to simulated machines, no hardware needed")
    d.add_argument("--fast", action="store_true", help="shorter jobs and sped-up machines (for tests)")
    d.add_argument("--json", help="write the bills and the booking system's MQTT traffic to this file")
    d.add_argument("--keep", type=float, nargs="?", const=float("inf"), default=0.0, metavar="SECONDS",
                   help="then keep the lab living (members come and go, jobs run, now and then a fault) this "
                   "long, or until Ctrl-C without a number")  # fmt: skip

    from .cli_agent import add_commands
    from .cli_lab import add_lab_commands

    add_commands(sub)
    add_lab_commands(sub)

    args = parser.parse_args(keys_joined(sys.argv[1:] if argv is None else argv))
    if hasattr(args, "handler"):
        from .ledger import LedgerError

        try:
            return int(args.handler(args))
        except LedgerError as exc:  # a ledger that is not whole: say which file and what to do
            print(f"afn-agent: {exc}", file=sys.stderr)
            return int(Exit.LEDGER)
    if args.command == "stream":
        return cmd_stream(args)
    if args.command == "sim":
        from .sim.run import main as sim_main

        return sim_main(args)
    if args.command == "profiles":
        return cmd_profiles(args.json)
    if args.command == "analyze":
        return cmd_analyze(args)
    return cmd_demo(args)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Exit 0 when the job may run, 4 when it does not fit or breaks policy, 2 on bad input."""
    from .gcode.analyzer import analyze_path
    from .gcode.lexer import GcodeError

    try:
        profile = load_profile(args.profile) if args.profile else None
        if not Path(args.file).is_file():
            raise GcodeError(f"{args.file}: no such file")
        with _progress(Path(args.file)) as progress:
            result = analyze_path(args.file, profile, progress)
    except (ProfileError, GcodeError) as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 2
    out = _analysis_json(result)
    if args.json:
        print(json.dumps(out))
    else:
        print(_analysis_text(out))
    if result.refused:
        print(f"afn-agent: refused: {result.refused}", file=sys.stderr)
        return 4
    return 0


@contextmanager
def _progress(path: Path) -> Iterator[Callable[[int, int], None] | None]:
    """A bar on the terminal for a file that takes more than a moment (20 MB: about a second here, several
    on a Pi); nothing when stderr is not a terminal (scripts, logs)."""
    if not sys.stderr.isatty() or path.stat().st_size < BAR_FROM_BYTES:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("analysing", BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True,
                  console=_stderr_console()) as bar:  # fmt: skip
        task = bar.add_task(path.name, total=path.stat().st_size)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _analysis_json(a: Analysis) -> dict[str, Any]:
    return {
        "file": a.file,
        "producer": a.producer,
        "lines": a.lines,
        "commands": a.commands,
        "material_mm": {
            "total": round(a.material_mm, 2),
            "per_tool": {str(k): round(v, 2) for k, v in a.material_mm_per_tool.items()},
        },
        "material_g": round(a.material_g, 2),
        "diameter_mm": a.diameter_mm,
        "density_g_cm3": a.density_g_cm3,
        "producer_count_mm": round(a.producer_count_mm, 2),
        "estimated_s": round(a.estimated_s, 1),
        "stated_estimate_s": a.stated_estimate_s,
        "time_split_s": {
            "moving": round(a.moving_s, 1),
            "heating": round(a.heating_s, 1),
            "dwell": round(a.dwell_s, 1),
            "other": round(a.other_s, 1),
        },
        "bounds": a.bounds,
        "bounds_all_moves": a.bounds_all_moves,
        "beam_on_s": round(a.beam_on_s, 1),
        "beam_on_mm": round(a.beam_on_mm, 1),
        "beam_full_power_s": round(a.beam_full_power_s, 1),
        "spindle_on_s": round(a.spindle_on_s, 1),
        "cutting_mm": round(a.cutting_mm, 1),
        "rapid_mm": round(a.rapid_mm, 1),
        "tools": a.tools,
        "relative_e_inferred": a.relative_e_inferred,
        "warnings": a.warnings,
        "policy_violations": a.policy_violations,
        "unknown_commands": a.unknown_commands,
        "fit_problems": a.fit_problems,
        "refused": a.refused,
    }


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _analysis_text(o: dict[str, Any]) -> str:
    split = o["time_split_s"]
    lines = [
        f"{o['file']} ({o['producer']}, {o['lines']} lines)",
        f"  time      {_hms(o['estimated_s'])}  (moving {_hms(split['moving'])}, "
        f"heating {_hms(split['heating'])}, dwell {_hms(split['dwell'])}, other {_hms(split['other'])})",
    ]
    if o["material_mm"]["total"]:
        per_tool = ", ".join(f"T{k} {v:.0f} mm" for k, v in o["material_mm"]["per_tool"].items())
        lines.append(f"  filament  {o['material_mm']['total']:.0f} mm, {o['material_g']:.1f} g ({per_tool})")
    if o["beam_on_s"]:
        lines.append(
            f"  laser     beam on {_hms(o['beam_on_s'])} over {o['beam_on_mm']:.0f} mm "
            f"({_hms(o['beam_full_power_s'])} at full power)"
        )
    if o["spindle_on_s"]:
        lines.append(
            f"  spindle   on {_hms(o['spindle_on_s'])}; cutting {o['cutting_mm']:.0f} mm, "
            f"rapid {o['rapid_mm']:.0f} mm; tools {o['tools']}"
        )
    if o["bounds"]:
        b = o["bounds"]
        lines.append("  bounds    " + "  ".join(f"{k} {v[0]:g}..{v[1]:g}" for k, v in b.items()))
    for v in o["policy_violations"][:10]:
        lines.append(f"  FORBIDDEN line {v['line']}: {v['command']} (rule {v['rule']})")
    for p in o["fit_problems"]:
        lines.append(f"  DOES NOT FIT: {p}")
    if o["unknown_commands"]:
        lines.append("  unknown   " + ", ".join(f"{k} x{n}" for k, n in o["unknown_commands"].items()))
    lines.extend(f"  warning   {w}" for w in o["warnings"][:10])
    return "\n".join(lines)


def cmd_profiles(as_json: bool = False) -> int:
    found = []
    for name, path in sorted(available_profiles().items()):
        try:
            p = load_profile(path)
            found.append({"name": name, "path": str(path), "protocol": p.protocol, "kind": p.kind,
                          "baud": p.link.baud, "description": p.description})  # fmt: skip
            if not as_json:
                print(f"{name:16} {p.protocol:7} {p.kind:8} {p.link.baud:>7} baud  {p.description}")
        except ProfileError as exc:
            found.append({"name": name, "path": str(path), "error": str(exc)})
            if not as_json:
                print(f"{name:16} INVALID  {exc}")
    if as_json:
        print(json.dumps(found, indent=1))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 2
    if not Path(args.file).is_file():
        print(f"afn-agent: {args.file}: no such file", file=sys.stderr)
        return 2
    machine = Machine("cli", profile, args.port, baud=args.baud, reconnect_s=0).start()
    try:
        if not machine.wait_ready(args.connect_timeout):
            why = machine.last_error or f"no {profile.name} firmware answered on {args.port}"
            print(f"afn-agent: {why}", file=sys.stderr)
            return 3
        result = _run_job(machine, args.file, show=not args.json and sys.stderr.isatty())
    finally:
        machine.close()
    baud = args.baud or profile.link.baud
    if args.json:
        print(json.dumps(_result_json(result, baud)))
    else:
        print(_sentence(result, baud), file=sys.stderr)
    return 0 if result.outcome == "completed" else 1


def _run_job(machine: Machine, path: str, show: bool) -> JobResult:
    interrupts = 0

    def on_sigint(*_: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print("\ncancelling (Ctrl-C again for an emergency stop)", file=sys.stderr)
            machine.cancel("operator")
        else:
            machine.emergency_stop("operator")

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        machine.start_job(path)
        if not show:
            while (result := machine.wait_job(0.2)) is None:
                pass
            return result
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[detail]}"))  # fmt: skip
        with Progress(*columns, console=_stderr_console()) as bar:
            task = bar.add_task(Path(path).name, total=1.0, detail="")
            while (result := machine.wait_job(0.2)) is None:
                snap = machine.snapshot()
                bar.update(task, completed=snap["progress"], detail=_detail(snap))
            snap = machine.snapshot()
            done = 1.0 if result.outcome == "completed" else snap["progress"]
            bar.update(task, completed=done, detail=_detail(snap))
        return result
    finally:
        signal.signal(signal.SIGINT, old)


def _detail(snap: dict[str, Any]) -> str:
    """Lines, resends and the temperatures (or GRBL's state) beside the bar."""
    temps = " ".join(f"{k}:{v[0]:.0f}/{v[1]:.0f}" for k, v in sorted(snap["temperatures"].items()))
    return f"{snap['lines_acked']} lines, {snap['resends']} resends {(snap['grbl_state'] or temps)[:30]}"


def _result_json(r: JobResult, baud: int) -> dict[str, Any]:
    secs = max(r.seconds, 1e-9)
    return {
        "outcome": r.outcome,
        "reason": r.reason,
        "code": r.code,
        "file": r.file,
        "lines": r.lines,
        "bytes": r.bytes,
        "seconds": round(r.seconds, 3),
        "resends": r.resends,
        "errors": r.errors,
        "lines_per_s": round(r.lines / secs, 1),
        "link_utilisation": round(r.bytes * 10 / baud / secs, 4),
    }


def _sentence(r: JobResult, baud: int) -> str:
    j = _result_json(r, baud)
    stats = (
        f"{r.lines} lines, {r.bytes} bytes in {r.seconds:.1f} s ({j['lines_per_s']:.0f} lines/s, "
        f"link {j['link_utilisation'] * 100:.0f}% busy), {r.resends} resends"
    )
    if r.outcome == "completed":
        return f"completed: {stats}"
    return f"{r.outcome}: {r.reason or r.code} - after {stats}"


def cmd_demo(args: argparse.Namespace) -> int:
    """A whole lab on this computer: see afn_agent/demo.py."""
    from .demo import run

    return run(args.fast, args.json, args.keep)
