"""The analyzer's time estimate against the time the real firmware takes to run the same lines.

Real Marlin 2.1.2 (Linux HAL, real time: the wall time of the job) and real GRBL 1.1h (grbl-sim's
simulated clock, read from its step report) run the opening of corpus files: the quote's analyzer with the
shipped profile estimates the same lines. `bench/accuracy.py --real-firmware` prints the table.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afn_agent.firmware.profile import load_profile  # noqa: E402
from afn_agent.gcode.analyzer import analyze_path  # noqa: E402
from afn_agent.machine.worker import JobResult, Machine  # noqa: E402
from tests.realfw.firmware import RealFirmware, available  # noqa: E402

# Lines the real firmware cannot run here or that only wait (heating: the HAL's thermal model is not the
# profile's; slicers' and our time figures leave heating apart too); tool changes; homing (no switches).
SKIP = re.compile(r"^\s*(M10[49]|M14[01]|M19[01]|M6\b|T\d|G28|G29|M8[01]\b|M73|M486|M117|M30\b|M2\b)", re.I)
PRINTERS = ["prusaslicer-2.6.1_benchy.gcode", "cura-4.10.0_m82m83.gcode", "ideamaker-4.2.2_benchy.gcode"]
GRBL_FILES = {
    "fusion360_grbl_wall.nc": "mill",
    "freecad_grbl_post_cycloid.nc": "mill",
    "inkscape-lasertools_trisquel.gcode": "laser",
}


def opening(src: Path, dst: Path, moves: int, grbl: bool) -> Path:
    """The first `moves` motion lines of a file with the lines before them, minus what SKIP names."""
    out, n = [], 0
    with open(src, encoding="utf-8", errors="replace") as f:
        for line in f:
            body = line.split(";", 1)[0].strip()
            if grbl:
                body = re.sub(r"\([^)]*\)", "", body).strip()
            if not body or SKIP.match(body) or body.startswith(("%", "O")):
                continue
            out.append(body)
            if re.match(r"^(N\d+\s*)?G0?[0-3]\b", body, re.I) or (grbl and re.match(r"^[XYZIJ]", body, re.I)):
                n += 1
                if n >= moves:
                    break
    dst.write_text("\n".join(out) + "\nG4 P0\n" if grbl else "\n".join(out) + "\n")
    return dst


def opening_within(src: Path, dst: Path, grbl: bool, profile: str, cap_s: float) -> tuple[Path, float]:
    """The longest opening (in doubling steps of moves) that the analyzer puts under `cap_s`."""
    best: tuple[int, float] = (0, 0.0)
    moves = 10
    while moves <= 100_000:
        secs = estimate(opening(src, dst, moves, grbl), profile)
        if secs > cap_s and best[0]:
            break
        best = (moves, secs)
        if secs > cap_s:
            break
        moves *= 2
    return opening(src, dst, best[0], grbl), best[1]


def estimate(path: Path, profile: str) -> float:
    a = analyze_path(path, load_profile(profile))
    return a.moving_s + a.dwell_s


def run_job(m: Machine, path: Path, limit_s: float) -> JobResult:
    """Connect, run one job to its end, close; anything but a completed job stops the bench."""
    m.start()
    try:
        if not m.wait_ready(30):
            raise RuntimeError(f"no {m.profile.name} firmware answered on {m.link.port_name}")
        m.start_job(path)
        r = m.wait_job(limit_s)
        if r is None or r.outcome != "completed":
            raise RuntimeError(f"{path.name}: {r}")
        return r
    finally:
        m.close()


def marlin_seconds(path: Path, work: Path) -> tuple[float, int]:
    fw = RealFirmware("marlin", work).start()
    try:
        r = run_job(Machine("bench", load_profile("marlin2"), str(fw.link)), path, 3600)
    finally:
        fw.stop()
    return r.seconds, r.lines


def grbl_seconds(path: Path, work: Path, kind: str) -> tuple[float, int]:
    """Simulated seconds from the first to the last step report (grbl-sim's clock, 20 ms resolution)."""
    steps = work / "steps.log"
    fw = RealFirmware("grbl", work, grbl_args=f"-n -r 0.02 -s {steps} -t 1").start()
    p = load_profile("grbl-1.1")
    mo = p.motion
    fw.say("$$")  # a fresh EEPROM image answers error:7 at boot
    settings = {f"${110 + i}": f"{mo.max_feedrate[i] * 60:.1f}" for i in range(3)}
    settings |= {f"${120 + i}": f"{mo.max_accel[i]:.1f}" for i in range(3)}
    settings |= {"$11": f"{mo.junction_deviation:.3f}", "$32": "1" if kind == "laser" else "0"}
    for key, value in settings.items():
        fw.say(f"{key}={value}")
    try:
        r = run_job(Machine("bench", p, str(fw.link), stop_on_grbl_error=False), path, 7200)
    finally:
        fw.stop()
    times = [float(x.split()[0]) for x in steps.read_text().splitlines() if x[:1] == " "]
    return (times[-1] - times[0] if len(times) > 1 else 0.0), r.lines


def table(corpus: Path, printer_cap_s: float = 120.0, grbl_cap_s: float = 30.0) -> list[str]:
    """Markdown lines: per file, the lines run, our estimate, the firmware's time and the error. Each
    opening is as long as the analyzer puts under the cap (grbl-sim runs several times slower than
    real time here)."""
    missing = available()
    if missing:
        return [f"real firmware not available here ({missing})"]
    out = [
        "| file | firmware | lines run | analyzer s | firmware s | error |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="afn-realfw-time-") as tmp:
        for i, name in enumerate(PRINTERS):
            dst = Path(tmp) / f"p{i}.gcode"
            part, ours = opening_within(corpus / name, dst, False, "marlin2", printer_cap_s)
            real, lines = marlin_seconds(part, Path(tmp) / f"m{i}")
            err = (ours / real - 1) * 100
            out.append(f"| {name} | Marlin 2.1.2 | {lines} | {ours:.1f} | {real:.1f} | {err:+.1f}% |")
        for i, (name, kind) in enumerate(GRBL_FILES.items()):
            part, ours = opening_within(corpus / name, Path(tmp) / f"g{i}.nc", True, "grbl-1.1", grbl_cap_s)
            real, lines = grbl_seconds(part, Path(tmp) / f"g{i}", kind)
            err = f"{(ours / real - 1) * 100:+.1f}%" if real else "n/a"
            out.append(f"| {name} | GRBL 1.1h ({kind}) | {lines} | {ours:.1f} | {real:.1f} | {err} |")
    return out
