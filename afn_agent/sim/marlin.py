"""A simulated Marlin 2 (or Prusa / Marlin 1.x): line numbers and checksums, RX flush on error,
a BUFSIZE command queue whose head holds the ok, a planner that drains at a set time per move,
heaters, busy keepalive, autoreport, M115 capabilities and the emergency parser."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from ..firmware.framing import checksum
from .core import INF, SimFirmware

MAX_CMD = 96
MOVES = {"G0", "G1", "G2", "G3"}
WORD_RE = re.compile(r"([A-Z])\s*([-+]?\d*\.?\d+)")
KNOWN_RE = re.compile(r"^[GMT]\d+(\.\d+)?$")
EMERGENCY = {"M112", "M108", "M410"}
LOOP_S = 0.001  # a command runs on a later turn of Marlin's main loop than the serial read that queued it
# Marlin clamps a target at MAXTEMP - OVERSHOOT (stock 275 - 15, 150 - 10): real 2.1.2 answers M104 S450
# with a target of 260 and M140 S200 with 140.
MAX_TARGET = {"M104": 260.0, "M109": 260.0, "M140": 140.0, "M190": 140.0}


@dataclass
class _Cmd:
    label: str
    text: str
    word: str
    ready_at: float = 0.0  # the main loop's next turn after the line was read


class _Heater:
    """A heater that approaches its target at a fixed rate (°C/s)."""

    def __init__(self, up: float, down: float) -> None:
        self.up, self.down = up, down
        self.t0, self.temp0, self.target = 0.0, 22.0, 0.0

    def temp(self, t: float) -> float:
        goal = max(self.target, 22.0)
        dt = max(t - self.t0, 0.0)
        if self.temp0 < goal:
            return min(goal, self.temp0 + self.up * dt)
        return max(goal, self.temp0 - self.down * dt)

    def set(self, target: float, t: float) -> None:
        self.temp0, self.t0, self.target = self.temp(t), t, target

    def eta(self, t: float) -> float:
        """Seconds until the target is reached from below (M109/M190 waits only when heating)."""
        now = self.temp(t)
        return max(self.target - now, 0.0) / self.up


class MarlinSim(SimFirmware):
    name = "marlin"
    WAKES = re.compile(rb"[\r\n]")  # a line's end (the emergency parser acts there too)

    def reset_state(self) -> None:
        o = self.opts
        self.last_n = 0
        self.linebuf = bytearray()
        self.queue: deque[_Cmd] = deque()
        self.planner: deque[float] = deque()
        self.head_end = INF
        self.block_until = INF
        self.block_kind = ""
        self.wait_since: float | None = None
        self.next_busy = INF
        self.heaters = {
            "T": _Heater(3.0 * o.speed, 1.0 * o.speed),
            "B": _Heater(1.0 * o.speed, 0.3 * o.speed),
        }
        self.autoreport_s = 0.0
        self.next_report = INF
        self.next_heat_report = INF
        self.next_run = INF
        self.pos = {"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}
        self.relative = False
        self.relative_e = False
        self._ep = bytearray()

    def banner(self, t: float) -> None:
        self.out("start", t)
        if self.opts.variant == "prusa":
            self.out("echo: 3.13.3-7094", t)
        else:
            self.out("echo:Marlin 2.1.2.1", t)
            self.out("echo: Last Updated: 2023-07-01 | Author: (afn-agent simulator)", t)
        self.out("echo: Free Memory: 2344  PlannerBufferBytes: 1232", t)

    # ---- bytes --------------------------------------------------------------------------------
    def on_urgent(self, byte: int, t: float) -> bool:
        """The emergency parser watches every byte, even ones the full ring will drop."""
        if not self.opts.emergency_parser:
            return False
        if byte == 10:
            word = _command_of(bytes(self._ep))[1]
            self._ep.clear()
            if word in EMERGENCY:
                self._emergency(word, t)
        elif len(self._ep) < 40:
            self._ep.append(byte)
        return False

    def _emergency(self, word: str, t: float) -> None:
        if word == "M112":
            self.stats.urgent_arrivals.append(t)
            if not self.opts.survive_estop:
                self.kill(t, "emergency stop (M112)")
        elif word == "M410":
            self.planner.clear()
            self.head_end = INF
        elif word == "M108" and self.block_kind == "heat":
            self.block_until = t  # break out of the heating wait; the M109/M190 ends now
        elif word == "M108" and self.block_kind == "user":
            self.log_realtime("M108 (wait for user ended)")
            self.block_until = t

    def drain_ring(self, t: float) -> None:
        """Marlin reads serial into its command queue while the queue has room, then runs the queue:
        lines read together are all checked (their N counted) before the first of them runs."""
        depth = self.opts.queue_depth
        while self.ring and len(self.queue) < depth and not self.halted:
            c = self.ring.pop(0)
            if c in (10, 13):
                line, self.linebuf = bytes(self.linebuf), bytearray()
                if line.strip():
                    self._line(line, t)
            elif len(self.linebuf) < MAX_CMD - 1:
                self.linebuf.append(c)
        self._process(t)

    def _line(self, raw: bytes, t: float) -> None:
        text = raw.decode("ascii", "replace")
        if ";" in text:
            text = text.split(";", 1)[0]
        text = text.strip()
        if not text:
            return
        if text.startswith("N"):
            m110 = "M110" in text
            m = re.match(r"N(-?\d*)", text)  # Printrun numbers from -1 (`N-1 M110 N-1`), as Marlin allows
            n = int(m.group(1)) if m and m.group(1) not in ("", "-") else 0
            if m110:
                m2 = re.search(r"M110\s*N(-?\d+)", text)
                n = int(m2.group(1)) if m2 else n
            star = raw.rfind(b"*")
            if n != self.last_n + 1 and not m110:
                if self.last_n - 1 <= n <= self.last_n:
                    return None  # a host's duplicate of one of its last two lines: ignored silently
                return self._line_error("Line Number is not Last Line Number+1", t)
            if star < 0:
                return self._line_error("No Checksum with line number", t)
            digits = re.match(rb"\s*(\d+)", raw[star + 1 :])
            if not digits or int(digits.group(1)) != checksum(raw[:star]):
                return self._line_error("checksum mismatch", t)
            self.last_n = n
            label = str(n)
            body = text[: text.rfind("*")]
            command = re.sub(r"^N-?\d*\s*", "", body).strip()
        else:  # Marlin 2 runs a line without N as it is, checksum cut off (a corrupted N lands here)
            label, command = "-", text.split("*", 1)[0].strip()
        self.queue.append(_Cmd(label, command, _command_of(command.encode())[1], t + LOOP_S))

    def _line_error(self, message: str, t: float) -> None:
        """Marlin's gcode_line_error: report, throw away whatever is in the RX ring, ask for a resend."""
        self.stats.line_errors += 1
        self.stats.resend_requests += 1
        self.out(f"Error:{message}, Last Line: {self.last_n}", t)
        self.stats.bytes_flushed += len(self.ring)
        self.ring.clear()
        self.linebuf.clear()
        self.out(f"Resend: {self.last_n + 1}", t)
        self.out("ok", t)

    # ---- the command queue --------------------------------------------------------------------
    def _process(self, t: float) -> None:
        """Run queued commands in order; lines that arrive meanwhile are read (and their N checked)
        before a command read with them runs, so an M110 renumbers after the line behind it was read."""
        while self.queue and not self.halted and self.block_until == INF:
            cmd = self.queue[0]
            if t < cmd.ready_at:
                self.next_run = min(self.next_run, cmd.ready_at)
                return
            if not self._execute(cmd, t):
                if self.wait_since is None:
                    self.wait_since = t
                    self.next_busy = t + 2.0
                return
            self.wait_since = None
            self.next_busy = INF if self.block_until == INF else self.next_busy

    def _execute(self, cmd: _Cmd, t: float) -> bool:
        """Run the head command if it can run now; False means it waits (planner full or busy)."""
        w = cmd.word
        if w in MOVES:
            words = dict(WORD_RE.findall(cmd.text.upper()[len(w) :]))
            if not (set(words) & set("XYZEIJR")):
                return self._done(cmd, t)
            if len(self.planner) >= self.opts.planner_blocks - 1:
                return False
            self._track_position(words)
            dur = self.scaled(self.opts.move_ms / 1000) * (4 if w in ("G2", "G3") else 1)
            self.planner.append(dur)
            if self.head_end == INF:
                self.head_end = t + dur
            return self._done(cmd, t)
        if w in ("M400", "G4", "G28", "G29", "M109", "M190", "M0", "M1", "M600") and self.planner:
            return False
        if w in ("M0", "M1", "M600"):  # a person is awaited: `busy: paused for user` until M108
            said = cmd.text[len(w):].strip()
            if said and w != "M600":
                self.out(f"echo:{said}", t)
            if self.opts.prompt_support:  # HOST_PROMPT_SUPPORT: the same words as a host prompt first
                asked = "Insert filament and press Continue" if w == "M600" else said or "Click to resume..."
                for line in ("prompt_end", f"prompt_begin {asked}", "prompt_button Continue", "prompt_show"):
                    self.out(f"//action:{line}", t)
            return self._block(cmd, t, INF, "user")
        if w == "G4":
            return self._block(cmd, t, self.scaled(_dwell(cmd.text)), "dwell")
        if w in ("G28", "G29"):
            return self._block(cmd, t, self.scaled(1.5), "home")
        if w in ("M109", "M190"):
            heater = self.heaters["T" if w == "M109" else "B"]
            target = _word(cmd.text, "S")
            if target is None:
                target = _param(cmd.text, "R", heater.target)
            heater.set(min(target, MAX_TARGET[w]), t)
            self.next_heat_report = t + 1.0
            return self._block(cmd, t, heater.eta(t), "heat")
        return self._immediate(cmd, t)

    def _block(self, cmd: _Cmd, t: float, seconds: float, kind: str) -> bool:
        self.block_until, self.block_kind = t + seconds, kind
        self.next_busy = t + (0.05 if kind == "user" else 2.0)  # Marlin says at once that it waits
        return False

    def _done(self, cmd: _Cmd, t: float, reply: str | None = None) -> bool:
        """Command finished: its ok goes out, it leaves the queue (which frees a slot)."""
        if reply is not None:
            self.out(reply, t)
        elif not self.ok_lost():
            self.out(self._ok_text(), t)
        self.queue.popleft()
        self.log_executed(cmd.label, cmd.text, t)
        n = int(cmd.label) if cmd.label.isdigit() else -1
        if n > 0 and n == self.opts.thermal_runaway_at:
            self.out("Error:Thermal Runaway, system stopped! Heater_ID: 0", t)
            self.kill(t, "thermal runaway")
        if n > 0 and n == self.opts.stall_at:
            self.halt("stalled (no more answers)")
        return True

    def _ok_text(self) -> str:
        """ADVANCED_OK names the line it answers (none for a line read without N)."""
        if not self.opts.advanced_ok:
            return "ok"
        planner_free = self.opts.planner_blocks - 1 - len(self.planner)
        label = self.queue[0].label if self.queue else "-"
        n = f" N{label}" if label != "-" else ""  # "-": read without N
        return f"ok{n} P{planner_free} B{self.opts.queue_depth - len(self.queue)}"

    def _immediate(self, cmd: _Cmd, t: float) -> bool:
        w, text = cmd.word, cmd.text
        if w == "M105":
            return self._done(cmd, t, "ok " + self._temps(t))
        if w == "M115":
            for line in self._m115():
                self.out(line, t)
            return self._done(cmd, t)
        if w == "M114":
            p = self.pos
            self.out(
                f"X:{p['X']:.2f} Y:{p['Y']:.2f} Z:{p['Z']:.2f} E:{p['E']:.2f} "
                f"Count X:{int(p['X'] * 80)} Y:{int(p['Y'] * 80)} Z:{int(p['Z'] * 400)}",
                t,
            )
        elif w == "M155":
            self.autoreport_s = _param(text, "S", 0.0)
            self.next_report = t + self.autoreport_s if self.autoreport_s > 0 else INF
        elif w in ("M104", "M140"):
            self.heaters["T" if w == "M104" else "B"].set(min(_param(text, "S", 0.0), MAX_TARGET[w]), t)
        elif w == "M112" and not self.opts.emergency_parser:  # else the parser already acted on it
            self.stats.urgent_arrivals.append(t)
            if not self.opts.survive_estop:
                self.kill(t, "emergency stop (M112)")
                return True
        elif w in ("G90", "G91"):
            self.relative = w == "G91"
        elif w in ("M82", "M83"):
            self.relative_e = w == "M83"
        elif w == "G92":
            for k, v in WORD_RE.findall(text.upper()[3:]):
                if k in self.pos:
                    self.pos[k] = float(v)
        elif w == "M290" and self.opts.babystep:
            self.babysteps = getattr(self, "babysteps", 0.0) + _param(text, "Z", 0.0)
        elif w == "M110":
            self.last_n = int(_param(text, "N", 0))
        elif not KNOWN_RE.match(w):
            self.out(f'echo:Unknown command: "{text}"', t)
        return self._done(cmd, t)

    def _m115(self) -> list[str]:
        o = self.opts
        name = "Prusa-Firmware 3.13.3 based on Marlin" if o.variant == "prusa" else "Marlin 2.1.2.1 (afn-sim)"
        caps = {
            "EEPROM": True,
            "AUTOREPORT_TEMP": o.autoreport,
            "EMERGENCY_PARSER": o.emergency_parser,
            "ADVANCED_OK": o.advanced_ok,
            "HOST_ACTION_COMMANDS": True,
            "PROMPT_SUPPORT": o.prompt_support,
            "BABYSTEPPING": o.babystep,
        }
        return [
            f"FIRMWARE_NAME:{name} SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
            "PROTOCOL_VERSION:1.0 MACHINE_TYPE:afn-sim EXTRUDER_COUNT:1"
        ] + [f"Cap:{k}:{int(v)}" for k, v in caps.items()]

    def _temps(self, t: float) -> str:
        h, b = self.heaters["T"], self.heaters["B"]
        return f"T:{h.temp(t):.2f} /{h.target:.2f} B:{b.temp(t):.2f} /{b.target:.2f} @:0 B@:0"

    def _track_position(self, words: dict[str, str]) -> None:
        for k, v in words.items():
            if k in self.pos:
                rel = self.relative_e if k == "E" else self.relative
                self.pos[k] = self.pos[k] + float(v) if rel else float(v)

    def kill(self, t: float, reason: str) -> None:
        self.out("Error:Printer halted. kill() called!", t)
        self.halt(reason)

    # ---- time ---------------------------------------------------------------------------------
    def next_event(self) -> float:
        if self.halted:
            return INF
        return min(
            self.head_end,
            self.block_until,
            self.next_busy,
            self.next_report,
            self.next_heat_report,
            self.next_run,
        )

    def fire_events(self, t: float) -> None:
        if t >= self.next_run:
            self.next_run = INF
        if t >= self.head_end:
            self.planner.popleft()
            self.head_end = t + self.planner[0] if self.planner else INF
        if t >= self.block_until:
            self.block_until, self.next_heat_report = INF, INF
            self.next_busy, self.wait_since = INF, None
            self._done(self.queue[0], t)
        if t >= self.next_busy:
            waiting = "paused for user" if self.block_kind == "user" else "processing"
            self.out(f"echo:busy: {waiting}", t)
            self.next_busy = t + 2.0
        if t >= self.next_report:
            self.out(" " + self._temps(t), t)
            self.next_report = t + self.autoreport_s
        if t >= self.next_heat_report:
            self.out(" " + self._temps(t) + " W:?", t)
            self.next_heat_report = t + 1.0
        self._process(t)
        self.drain_ring(t)


def _command_of(line: bytes) -> tuple[str, str]:
    """(command text, first word) of a raw line, without line number or checksum."""
    text = line.decode("ascii", "replace").split("*", 1)[0].strip()
    text = re.sub(r"^N\d+\s*", "", text)
    word = text.split(None, 1)[0].upper() if text else ""
    return text, word


def _word(text: str, letter: str) -> float | None:
    for k, v in WORD_RE.findall(text.upper().split(None, 1)[-1] if " " in text else ""):
        if k == letter:
            return float(v)
    return None


def _param(text: str, letter: str, default: float) -> float:
    v = _word(text, letter)
    return default if v is None else v


def _dwell(text: str) -> float:
    p = _word(text, "P")
    return p / 1000 if p is not None else _param(text, "S", 0.0)
