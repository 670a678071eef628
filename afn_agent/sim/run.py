"""Start a simulated firmware: `afn-agent sim marlin|grbl --link PATH`, or from tests in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from .core import SimFirmware, SimOptions
from .grbl import GrblSim
from .marlin import MarlinSim

KINDS = {"marlin": MarlinSim, "grbl": GrblSim}
DEFAULTS = {
    "marlin": {"rx_buffer": 128, "queue_depth": 4, "planner_blocks": 16},
    "grbl": {"rx_buffer": 128, "queue_depth": 1, "planner_blocks": 16},
}
HELP = {
    "baud": "bits per second on the simulated wire (8N1: 10 bits a byte)",
    "latency_ms": "one-way latency added by the USB-serial adapter, ms",
    "rx_buffer": "firmware RX ring size in bytes (it drops bytes when full)",
    "queue_depth": "Marlin BUFSIZE: commands parsed ahead of the planner",
    "planner_blocks": "planner ring size (one slot stays empty)",
    "move_ms": "time each move takes in the planner, ms",
    "speed": "speed-up of machine time (moves, heating, dwell), not of the wire",
    "corrupt": "fraction of host lines with one corrupted byte",
    "lost_ok": "fraction of oks never sent",
    "seed": "random seed for the faults",
    "reset_at": "reset (power glitch) after executing this many lines",
    "disconnect_at": "vanish (USB unplug) after executing this many lines",
    "replug_s": "come back this many seconds after an unplug (-1: never)",
    "thermal_runaway_at": "thermal runaway at this line number (Marlin)",
    "alarm_at": "ALARM:1 hard limit after this many lines (GRBL)",
    "door_at": "open the safety door after this many lines (GRBL)",
    "door_open_s": "how long the door stays open",
    "feed_time": "GRBL: a move takes its distance at its feed (at least move_ms), as on the real machine",
    "homing_lock": "GRBL $22=1: power up in alarm until $H or $X (as real GRBL 1.1h does)",
    "prompt_support": "Marlin HOST_PROMPT_SUPPORT (//action:prompt_begin … prompt_show before a wait)",
    "babystep": "Marlin BABYSTEPPING (M290, Cap:BABYSTEPPING:1)",
    "plate": "GRBL: a touch plate is under the tool (G38.2 touches it at --plate-z; without: ALARM:5)",
    "plate_z": "GRBL: the machine Z of the touch plate's top",
    "stall_at": "stop answering after this line number (Marlin)",
    "survive_estop": "count M112/0x18/! arrivals and carry on (benchmarks only)",
    "variant": "marlin: '' or prusa; grbl: '', grblhal or fluidnc",
    "advanced_ok": "Marlin ADVANCED_OK (ok N.. P.. B..)",
    "emergency_parser": "Marlin EMERGENCY_PARSER (M112 acted on at arrival)",
    "autoreport": "Marlin AUTOREPORT_TEMP capability",
    "boot_s": "boot time after a reset before the banner",
    "log": "file to log every executed line to",
    "stats": "file to write the counters to (JSON) on exit",
}


def make_sim(kind: str, link: str | Path, opts: SimOptions) -> SimFirmware:
    return KINDS[kind](link, opts)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(KINDS), help="the firmware to simulate")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the port to open)")
    for f in fields(SimOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP.get(f.name))
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, help=HELP.get(f.name))


def options_from_args(args: argparse.Namespace) -> SimOptions:
    values: dict[str, Any] = dict(DEFAULTS[args.kind])
    for f in fields(SimOptions):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return SimOptions(**values)


def main(args: argparse.Namespace) -> int:
    sim = make_sim(args.kind, args.link, options_from_args(args))
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    signal.signal(signal.SIGINT, lambda *_: sim.stop())
    print(f"simulated {args.kind} on {args.link} at {sim.opts.baud} baud; Ctrl-C to stop", file=sys.stderr)
    sim.run()
    return 0


class SimProcess:
    """A simulator in its own process (its own GIL, as a real firmware has its own CPU)."""

    def __init__(self, kind: str, workdir: str | Path | None = None, **options: Any) -> None:
        self.kind = kind
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="afn-sim-"))
        self.link = self.dir / f"{kind}.tty"
        self.stats_path = self.dir / f"{kind}.stats.json"
        self.log_path = self.dir / f"{kind}.log"
        self.options = {"stats": str(self.stats_path), "log": str(self.log_path), **options}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SimProcess:
        cmd = [sys.executable, "-m", "afn_agent.sim", self.kind, "--link", str(self.link)]
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                cmd.append(flag if value else "--no-" + flag[2:])
            elif value is not None:
                cmd += [flag, str(value)]
        self.link.unlink(missing_ok=True)  # a link left by an earlier run must not be taken for this one
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        deadline = time.monotonic() + timeout
        while not self.link.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator {self.kind} did not start (exit {self.proc.poll()})")
            time.sleep(0.01)
        return self

    def stop(self) -> dict[str, Any]:
        """Stop it and return its counters."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            stats: dict[str, Any] = json.loads(self.stats_path.read_text())
            return stats
        except (OSError, ValueError):
            return {}

    def executed(self) -> list[tuple[str, str]]:
        """The (label, command) lines the firmware executed, in order."""
        if not self.log_path.exists():
            return []
        return [(a, b) for a, _, b in (x.partition("\t") for x in self.log_path.read_text().splitlines())]

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
