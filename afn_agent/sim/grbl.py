"""A simulated GRBL 1.1 (or grblHAL / FluidNC): character-counted RX ring, realtime bytes acted on at
arrival, a planner that blocks the parser when full, feed hold, door, alarms, check mode, settings."""

from __future__ import annotations

import re
from collections import deque

from .core import INF, SimFirmware

LINE_MAX = 80
WORD_RE = re.compile(r"([A-Z])([-+]?(?:\d+\.?\d*|\.\d+))")
G_OK = {
    "0",
    "1",
    "2",
    "3",
    "4",
    "10",
    "17",
    "18",
    "19",
    "20",
    "21",
    "28",
    "28.1",
    "30",
    "30.1",
    "38.2",
    "38.3",
    "38.4",
    "38.5",
    "40",
    "43.1",
    "49",
    "53",
    "54",
    "55",
    "56",
    "57",
    "58",
    "59",
    "61",
    "80",
    "90",
    "91",
    "91.1",
    "92",
    "92.1",
    "93",
    "94",
}
M_OK = {"0", "1", "2", "30", "3", "4", "5", "7", "8", "9", "56"}
SETTINGS = {
    "0": "10",
    "1": "25",
    "2": "0",
    "3": "0",
    "4": "0",
    "5": "0",
    "6": "0",
    "10": "1",
    "11": "0.010",
    "12": "0.002",
    "13": "0",
    "20": "0",
    "21": "0",
    "22": "0",
    "23": "0",
    "24": "25.000",
    "25": "500.000",
    "26": "250",
    "27": "1.000",
    "30": "1000",
    "31": "0",
    "32": "0",
    "100": "250.000",
    "101": "250.000",
    "102": "250.000",
    "110": "500.000",
    "111": "500.000",
    "112": "500.000",
    "120": "10.000",
    "121": "10.000",
    "122": "10.000",
    "130": "200.000",
    "131": "200.000",
    "132": "200.000",
}
BANNERS = {
    "": "Grbl 1.1h ['$' for help]",
    "grblhal": "GrblHAL 1.1f ['$' or '$HELP' for help]",
    "fluidnc": "Grbl 3.7 [FluidNC v3.7.8 (noradio) '$' for help]",
}


class GrblSim(SimFirmware):
    name = "grbl"
    WAKES = re.compile(rb"[\r\n?!~\x18\x80-\xff]")  # a line's end, and every realtime byte (on_urgent)

    def reset_state(self) -> None:
        self.linebuf = bytearray()
        self.overflow = False
        self.pending: tuple[str, str] | None = None
        self.planner: deque[float] = deque()
        self.head_end = INF
        self.head_left = 0.0
        self.block_until = INF
        self.hold = False
        self.hold_until = INF
        self.door = self.door_open = False
        self.door_closes = INF
        self.critical = False
        self.alarm = getattr(self, "alarm", False)
        self.check = False
        self.feed = 0.0
        self.spindle = 0.0
        self.motion = "0"
        self.pos = list(getattr(self, "pos", [0.0, 0.0, 0.0]))  # a reset keeps the position
        self.wco = list(getattr(self, "wco", [0.0, 0.0, 0.0]))  # G54 work offset, kept (EEPROM)
        self.prb = getattr(self, "prb", (0.0, 0.0, 0.0, 0))
        self.reports = 0
        self.wco_due = True
        self.jog: tuple[list[float], list[float], float, float] | None = None  # from, to, t0, t1
        self.program_hold = False  # M0: Hold:0 with its ok held back until a cycle start
        self.relative = False
        self._move_s = self.opts.move_ms / 1000
        self.settings = dict(getattr(self, "settings", SETTINGS))

    def reboot(self, t: float, first: bool = False) -> None:
        """A power cycle clears an alarm, except the homing lock ($22=1) that GRBL sets at power-up."""
        self.alarm = self.opts.homing_lock or getattr(self, "settings", SETTINGS).get("22") == "1"
        super().reboot(t, first)

    def banner(self, t: float) -> None:
        self.out("", t)
        self.out(BANNERS.get(self.opts.variant, BANNERS[""]), t)
        if self.alarm:
            self.out("[MSG:'$H'|'$X' to unlock]", t)

    # ---- realtime bytes -------------------------------------------------------------------------
    def on_urgent(self, byte: int, t: float) -> bool:
        if byte == 0x3F:  # '?'
            self.out(self._status(t), t)
        elif byte == 0x21:  # '!'
            self.stats.urgent_arrivals.append(t)
            if self.planner and not self.hold:
                self.hold = True
                self.head_left = max(self.head_end - t, 0.0)
                self.head_end = INF
                self.hold_until = t + self.scaled(0.05)
        elif byte == 0x7E:  # '~'
            if self.program_hold:
                self.log_realtime("~ cycle start (M0 continued)")
                self.program_hold = False
                _, text = self.pending or ("", "")
                self.pending = None
                self.log_executed("-", text, t)
                self._reply("ok", t)
                self.drain_ring(t)
            elif (self.hold or self.door) and not self.door_open:
                self.door = False
                self._resume(t)
        elif byte == 0x18:
            self.stats.urgent_arrivals.append(t)
            self._soft_reset(t)
        elif byte == 0x84:
            self._open_door(t)
        elif byte == 0x85:
            if self.jog is not None:
                self.log_realtime("0x85 jog cancel")
                start, end, t0, t1 = self.jog
                f = min(max((t - t0) / max(t1 - t0, 1e-9), 0.0), 1.0)
                self.pos = [a + (b - a) * f for a, b in zip(start, end, strict=True)]
                self.jog = None
            if self.planner:
                self.planner.clear()
                self.head_end = INF
        elif byte < 0x80:
            return False
        return True

    def _resume(self, t: float) -> None:
        self.hold = False
        self.hold_until = INF
        if self.planner:
            self.head_end = t + self.head_left

    def _soft_reset(self, t: float) -> None:
        held = self.hold and t >= self.hold_until  # a finished feed hold has stopped the axes
        moving = (bool(self.planner) and not held) or self.block_until != INF
        self.stats.resets += 1
        self.ring.clear()  # the RX side is flushed; what is already in the TX buffer still goes out
        self.reset_state()
        if moving:
            self.alarm = True
            self.out("ALARM:3", t)
        self.banner(t)

    def _open_door(self, t: float) -> None:
        self.door = self.door_open = True
        self.door_closes = t + self.scaled(self.opts.door_open_s)
        if not self.hold:
            self.hold = True
            self.head_left = max(self.head_end - t, 0.0) if self.planner else 0.0
            self.head_end = INF
            self.hold_until = t + self.scaled(0.05)
        if self.spindle:
            self.spindle = 0.0  # GRBL turns the spindle/laser off on a door opening

    def _status(self, t: float) -> str:
        if self.alarm:
            state = "Alarm"
        elif self.door:
            state = ("Door:2" if t < self.hold_until else "Door:1") if self.door_open else "Door:0"
        elif self.program_hold:
            state = "Hold:0"
        elif self.hold:
            state = "Hold:1" if t < self.hold_until else "Hold:0"  # 1: decelerating, 0: stopped
        elif self.check:
            state = "Check"
        elif self.block_until != INF:
            state = "Home" if self.pending and self.pending[1] == "$H" else "Run"
        else:
            state = ("Jog" if self.jog else "Run") if self.planner else "Idle"
        x, y, z = self._live_pos(t)
        free_planner = self.opts.planner_blocks - 1 - len(self.planner)
        rx_free = self.ring_cap - len(self.ring)
        pins = "|Pn:D" if self.door_open else ""
        spindle = 0 if self.door else self.spindle  # a door disables the spindle and the laser
        self.reports += 1
        wco = ""
        if self.wco_due or self.reports % 10 == 0:  # as GRBL: now and then, and just after a change
            self.wco_due = False
            wco = "|WCO:" + ",".join(f"{v:.3f}" for v in self.wco)
        return (
            f"<{state}|MPos:{x:.3f},{y:.3f},{z:.3f}|Bf:{free_planner},{rx_free}"
            f"|FS:{self.feed:.0f},{spindle:.0f}{pins}{wco}>"
        )

    def _live_pos(self, t: float) -> list[float]:
        """Where the axes are: a jog's position between its ends, else the last planned target."""
        if self.jog is None:
            return self.pos
        start, end, t0, t1 = self.jog
        f = min(max((t - t0) / max(t1 - t0, 1e-9), 0.0), 1.0)
        return [a + (b - a) * f for a, b in zip(start, end, strict=True)]

    # ---- lines ----------------------------------------------------------------------------------
    def drain_ring(self, t: float) -> None:
        while self.ring and self.pending is None and not self.critical and self.block_until == INF:
            c = self.ring.pop(0)
            if c in (10, 13):
                line, overflow = bytes(self.linebuf), self.overflow
                self.linebuf, self.overflow = bytearray(), False
                if overflow:
                    self._reply("error:11", t)
                elif c == 10 or line:
                    self._line(line.decode("ascii", "replace"), t)
            elif len(self.linebuf) >= LINE_MAX - 1:
                self.overflow = True
            elif c > 32 or (c == 32 and self.linebuf[:1] == b"$"):
                self.linebuf.append(c)

    def _reply(self, text: str, t: float) -> None:
        if text != "ok" or not self.ok_lost():
            self.out(text, t)

    def _line(self, raw: str, t: float) -> None:
        line = re.sub(r"\([^)]*\)|;.*$", "", raw).strip().upper()
        if not line:
            return self._reply("ok", t)
        if line.startswith("$"):
            return self._system(line, raw, t)
        if self.alarm:
            return self._reply("error:9", t)
        return self._queue_line(line, raw, t)

    def _queue_line(self, line: str, raw: str, t: float) -> None:
        words = WORD_RE.findall(line)
        if WORD_RE.sub("", line).strip():
            return self._reply("error:2" if re.search(r"[A-Z]", WORD_RE.sub("", line)) else "error:1", t)
        motion = None
        for letter, value in words:
            num = value.lstrip("+")
            num = num.rstrip("0").rstrip(".") if "." in num else num
            if letter == "G" and num not in G_OK:
                return self._reply("error:20", t)
            if letter == "M" and num not in M_OK:
                return self._reply("error:20", t)
            if letter == "G" and num in ("0", "1", "2", "3"):
                motion = num
            if letter == "G" and num in ("90", "91"):
                self.relative = num == "91"
            if letter == "F":
                self.feed = float(value)
            if letter == "S":
                self.spindle = float(value)
            if letter == "M" and num == "5":
                self.spindle = 0.0
        if motion is not None:
            self.motion = motion
        axes = {k: float(v) for k, v in words if k in "XYZ"}
        feeding = motion in ("1", "2", "3") or (axes and motion is None and self.motion != "0")
        if feeding and self.feed <= 0:
            return self._reply("error:22", t)
        if self.check:  # parsed and checked, never moved
            self.log_executed("check", raw.strip(), t)
            return self._reply("ok", t)
        g = {v.lstrip("+").rstrip("0").rstrip(".") if "." in v else v for k, v in words if k == "G"}
        if "10" in g:
            return self._g10(words, raw, t)
        if "38.2" in g:
            return self._probe(words, raw, t)
        if any(k == "M" and v.lstrip("0") in ("0", "1", "") for k, v in words):
            self.pending = ("pause", raw.strip())
            return self._try_pending(t)
        if any(k == "G" and v.rstrip("0").rstrip(".") == "4" for k, v in words):
            self.pending = ("dwell", raw.strip())
            p = next((float(v) for k, v in words if k == "P"), 0.0)
            self._wait_dwell = self.scaled(p)
            return self._try_pending(t)
        if axes or motion in ("2", "3"):
            before = list(self.pos)
            self._target(axes, machine=any(k == "G" and v == "53" for k, v in words))
            self._move_s = self._move_seconds(before, motion or self.motion)
            self.pending = ("move", raw.strip())
            return self._try_pending(t)
        self.log_executed("-", raw.strip(), t)
        return self._reply("ok", t)

    def _move_seconds(self, before: list[float], motion: str) -> float:
        """move_ms, or with feed_time the straight distance at the feed (rapids at $110), as GRBL takes."""
        fixed = self.opts.move_ms / 1000
        if not self.opts.feed_time:
            return fixed
        dist = sum((a - b) ** 2 for a, b in zip(self.pos, before, strict=True)) ** 0.5
        feed = float(self.settings.get("110", "500")) if motion == "0" else self.feed
        return float(max(fixed, dist / max(feed, 1e-6) * 60))

    def _target(self, axes: dict[str, float], machine: bool = False) -> None:
        """Absolute targets are work coordinates (plus the G54 offset), except on a G53 line."""
        for i, k in enumerate("XYZ"):
            if k in axes:
                base = self.pos[i] if self.relative else (0.0 if machine else self.wco[i])
                self.pos[i] = base + axes[k]

    def _try_pending(self, t: float) -> None:
        """Plan the parsed line if the planner has room; until then the parser (and the ring) waits."""
        if self.pending is None or self.block_until != INF:
            return
        kind, text = self.pending
        if kind == "dwell":
            if self.planner:
                return
            self.block_until = t + self._wait_dwell
            return
        if kind == "home":
            self.block_until = t + self.scaled(1.5)
            return
        if kind == "pause":  # M0: the planner empties, then a hold until a person's cycle start
            if not self.planner:
                self.program_hold = True
            return
        if len(self.planner) >= self.opts.planner_blocks - 1:
            return
        dur = self.scaled(self._move_s)
        self.planner.append(dur)
        if self.head_end == INF and not self.hold:
            self.head_end = t + dur
        self.pending = None
        self.log_executed("-", text, t)
        self._reply("ok", t)
        if self.executed == self.opts.alarm_at:
            self._alarm(1, t)
        if self.executed == self.opts.door_at:
            self._open_door(t)

    def _g10(self, words: list[tuple[str, str]], raw: str, t: float) -> None:
        """G10 L20 P1: the current position becomes the given work coordinates (G54 only here)."""
        w = dict(words)
        if w.get("L") != "20" or w.get("P", "1") not in ("1", "0"):
            return self._reply("error:20", t)
        for i, axis in enumerate("XYZ"):
            if axis in w:
                self.wco[i] = self.pos[i] - float(w[axis])
        self.wco_due = True
        self.log_executed("-", raw.strip(), t)
        return self._reply("ok", t)

    def _probe(self, words: list[tuple[str, str]], raw: str, t: float) -> None:
        """G38.2 Z: down towards the target (work coordinates); a plate at --plate-z stops it there."""
        w = dict(words)
        if "Z" not in w or self.planner:
            return self._reply("error:9" if "Z" in w else "error:26", t)
        target = float(w["Z"]) + (self.pos[2] if self.relative else self.wco[2])
        self.log_executed("-", raw.strip(), t)
        if self.opts.plate and target <= self.opts.plate_z <= self.pos[2]:
            self.pos[2] = self.opts.plate_z
            self.prb = (self.pos[0], self.pos[1], self.pos[2], 1)
            self.out(f"[PRB:{self.pos[0]:.3f},{self.pos[1]:.3f},{self.pos[2]:.3f}:1]", t)
            return self._reply("ok", t)
        self.pos[2] = target
        self.prb = (self.pos[0], self.pos[1], self.pos[2], 0)
        self.out("ALARM:5", t)  # probe fail: no contact within the programmed travel
        self.alarm = True
        return self._reply("ok", t)

    def _jog(self, cmd: str, raw: str, t: float) -> None:
        """`$J=`: G91 relative, G53 machine, else work coordinates; planned like a move, cancelled by 0x85."""
        body = cmd[3:]
        words = WORD_RE.findall(body)
        if WORD_RE.sub("", body).strip() or not any(k == "F" for k, _ in words):
            return self._reply("error:2", t)
        gs = {v for k, v in words if k == "G"}
        start = list(self.pos)
        end = list(self.pos)
        for i, axis in enumerate("XYZ"):
            for k, v in words:
                if k == axis:
                    base = start[i] if "91" in gs else (0.0 if "53" in gs else self.wco[i])
                    end[i] = base + float(v)
        feed = next(float(v) for k, v in words if k == "F")
        dist = sum((a - b) ** 2 for a, b in zip(start, end, strict=True)) ** 0.5
        dur = self.scaled(max(dist / max(feed, 1e-6) * 60, 0.01))
        self.pos = end
        self.jog = (start, end, t, t + dur)
        self.planner.append(dur)
        if self.head_end == INF:
            self.head_end = t + dur
        self.log_executed("$", raw.strip(), t)
        return self._reply("ok", t)

    def _alarm(self, code: int, t: float) -> None:
        self.out(f"ALARM:{code}", t)
        self.planner.clear()
        self.head_end = INF
        self.alarm = self.critical = True
        self.out("[MSG:Reset to continue]", t)

    def _system(self, line: str, raw: str, t: float) -> None:
        cmd = line.replace(" ", "")
        if cmd == "$$":
            for k, v in self.settings.items():
                self.out(f"${k}={'1' if k == '22' and self.opts.homing_lock else v}", t)
        elif cmd == "$I":
            self.out("[VER:1.1h.20190825:]", t)
            self.out(f"[OPT:V,{self.opts.planner_blocks - 1},{self.opts.rx_buffer}]", t)
        elif cmd == "$G":
            self.out(
                f"[GC:G{self.motion} G54 G17 G21 G9{1 if self.relative else 0} G94 M5 M9 T0 "
                f"F{self.feed:.0f} S{self.spindle:.0f}]",
                t,
            )
        elif cmd == "$#":
            for name in ("G54", "G55", "G56", "G57", "G58", "G59", "G28", "G30", "G92"):
                xyz = self.wco if name == "G54" else [0.0, 0.0, 0.0]
                self.out(f"[{name}:{xyz[0]:.3f},{xyz[1]:.3f},{xyz[2]:.3f}]", t)
            self.out("[TLO:0.000]", t)
            x, y, z, ok = self.prb
            self.out(f"[PRB:{x:.3f},{y:.3f},{z:.3f}:{ok}]", t)
        elif cmd.startswith("$J="):
            if self.alarm:
                return self._reply("error:9", t)
            return self._jog(cmd, raw, t)
        elif cmd == "$X":
            if self.alarm:
                self.out("[MSG:Caution: Unlocked]", t)
            self.alarm = self.critical = False
        elif cmd == "$H":
            self.alarm = False
            self.pos = [0.0, 0.0, 0.0]
            self.pending = ("home", "$H")
            self._try_pending(t)
            return
        elif cmd == "$C":
            self.check = not self.check
            self.out(f"[MSG:{'Enabled' if self.check else 'Disabled'}]", t)
            if not self.check:  # leaving check mode resets the controller
                self.log_executed("$", raw.strip(), t)
                self._reply("ok", t)
                self._soft_reset(t)
                return
        elif m := re.fullmatch(r"\$(\d+)=([-+]?[\d.]+)", cmd):
            self.settings[m.group(1)] = m.group(2)
        elif re.fullmatch(r"\$(N\d?=.*|N|RST=[$#*]|SLP)", cmd):
            pass
        else:
            return self._reply("error:3", t)
        self.log_executed("$", raw.strip(), t)
        return self._reply("ok", t)

    # ---- time -----------------------------------------------------------------------------------
    def next_event(self) -> float:
        door = self.door_closes if self.door_open else INF
        return min(self.head_end, self.block_until, door)

    def fire_events(self, t: float) -> None:
        if t >= self.head_end:
            self.planner.popleft()
            self.head_end = t + self.planner[0] if self.planner else INF
            if not self.planner:
                self.jog = None
        if t >= self.block_until:
            self.block_until = INF
            kind, text = self.pending or ("", "")
            self.pending = None
            self.log_executed("$" if kind == "home" else "-", text, t)
            self._reply("ok", t)
        if self.door_open and t >= self.door_closes:
            self.door_closes = INF
            self.door_open = False  # closed: Door:0 until a person sends a cycle start
        self._try_pending(t)
        self.drain_ring(t)
