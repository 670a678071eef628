"""GRBL-family host protocol (GRBL 1.1, grblHAL, FluidNC) as a sans-I/O state machine.

Character counting over the RX ring, realtime bytes that skip it, status reports, ok/error/ALARM,
banners (a reset), settings dumps and check mode. Time only as the `now` the caller passes.
"""

from __future__ import annotations

import re
from collections import deque

from . import events as ev
from .framing import command_word, plain
from .grbl_codes import alarm_meaning, error_meaning
from .profile import Profile
from .window import SentLine, Window

STATUS = b"?"
FEED_HOLD = b"!"
CYCLE_START = b"~"
SOFT_RESET = b"\x18"
JOG_CANCEL = b"\x85"
REALTIME = {
    "status": STATUS,
    "hold": FEED_HOLD,
    "resume": CYCLE_START,
    "reset": SOFT_RESET,
    "jog_cancel": JOG_CANCEL,
    "door": b"\x84",
    "feed_100": b"\x90",
    "spindle_stop": b"\x9e",
}
BANNER_RE = re.compile(r"^(grbl|grblhal|fluidnc)\b.*", re.I)
SETTING_RE = re.compile(r"^\$([A-Za-z0-9]+)=(.*)$")
OPT_RE = re.compile(r"^OPT:([^,]*),(\d+),(\d+)")
SYNC_RE = re.compile(r"^(\$|G10\s*L[0-9]|G28\.1|G30\.1)", re.I)
PROGRAM_PAUSES = frozenset({"M0", "M00", "M1", "M01"})
AXES = "XYZABC"
BANNER_QUIET_S = 0.25  # after a reboot banner, answers to lines written before it may still come
GREET_RETRY_S = 2.0  # no banner and no status report: reset the controller again this often


class GrblProtocol:
    """One connection to a GRBL-family controller."""

    STOP_BYTES = SOFT_RESET  # written out of band from any thread by an e-stop; `emergency_stop()` catches up

    def __init__(self, profile: Profile, now: float) -> None:
        self.profile = profile
        self.window = Window(profile.window_bytes, pingpong=profile.link.flow == "pingpong")
        self.capabilities: dict[str, bool] = dict(profile.capabilities)
        self.firmware_name = ""
        self.version = ""
        self.settings: dict[str, str] = {}
        self.state = "Unknown"
        self.substate: int | None = None
        self.check_mode = False
        self.alarm_locked = False
        self._job_active = False
        self.errors = 0
        self.lines_heard = 0  # every line the firmware wrote: a connect retry is for a silent one only
        self.resends = 0
        self.planner_blocks: int | None = None
        self.planner_free: int | None = None
        self.rx_free: int | None = None
        self._seq = 0
        self._host: deque[tuple[str, object]] = deque()
        self._job: deque[tuple[str, object]] = deque()
        self._rx = bytearray()
        self._events: list[ev.Event] = []
        self._urgent: list[bytes] = []
        self._expect_reset = False
        self._sync_wait = False
        self._faulted = False
        self._wait_since = now
        self._last_poll = now
        self._last_status = now
        self._greeting = False  # nothing is written until the controller shows it is up
        self._banner_due = False  # after our reset only its banner ends the greeting, not a status
        self._greet_at = now
        self._quiet_until = 0.0
        self._status_seen = False  # a status report since the last banner (alarm known or not)
        self._info_ready = False  # `$I` answered; its FirmwareInfo waits for a status report
        self.work_offset: dict[str, float] = {}  # WCO (G54 + G92 + tool length), machine − work
        self._waiting_on = -1  # the program pause (seq) already reported as waiting for a person

    # ---- what the driver feeds in -------------------------------------------------------------
    def begin_job(self) -> None:
        """A job is streaming: a reset from now on loses it (FirmwareReset with mid_job)."""
        self._job_active = True

    def end_job(self) -> None:
        self._job_active = False

    @property
    def job_active(self) -> bool:
        return self._job_active

    def send(self, command: str, tag: object = None, *, host: bool = False) -> None:
        """Queue one line; host lines (scripts, `$` commands) go ahead of job lines."""
        (self._host if host else self._job).append((command.strip(), tag))

    def wants_lines(self) -> bool:
        return len(self._job) < 4 and not self._faulted

    def handshake(self, now: float) -> None:
        """Greet the controller: write nothing until it shows it is up (a banner or a status report),
        then ask for build info (RX size) and settings. Lines written while it boots would be answered
        after its banner and credited to the wrong lines. No sign of life: a soft reset, then again."""
        self.window.clear()
        self._host.clear()
        self._sync_wait = False
        self._greeting, self._status_seen, self._info_ready = True, False, False
        self._greet_at = now + self.profile.link.open_delay_s
        self._urgent.append(STATUS)

    def _greeted(self, now: float, quiet: float = 0.0) -> None:
        self._greeting = self._banner_due = False
        self._quiet_until = now + quiet
        self._host.extend((("$I", None), ("$$", None)))

    @property
    def motion_stopped(self) -> bool:
        """The axes are at rest, so a reset keeps the position: Idle, a completed hold (`Hold:0`; `Hold:1`
        is still decelerating) or a door hold that has stopped (`Door:0`, `Door:1`)."""
        if self.state == "Idle":
            return True
        if self.state == "Hold":
            return self.substate == 0
        return self.state == "Door" and self.substate in (0, 1)

    @property
    def homing_enabled(self) -> bool:
        """`$22=1`: the controller homes, so its machine coordinates are referenced to its travel (without
        homing they count from wherever it was switched on)."""
        return self.settings.get("22", "0").split(".")[0] == "1"

    def feed_hold(self) -> bytes:
        """`!`: decelerate to a stop. What we knew of the motion is stale until the next report."""
        self.state, self.substate = "Unknown", None
        return FEED_HOLD

    def realtime(self, name: str) -> bytes:
        """A realtime command's byte; it bypasses the RX ring and gets no ok."""
        byte = REALTIME[name]
        if byte == SOFT_RESET:
            self._expect_reset = True
        return byte

    def soft_reset(self) -> bytes:
        """Reset the controller: its RX ring and planner are flushed, so our window is empty."""
        self.discard_job()
        self._host.clear()
        self.window.clear()
        self._sync_wait = False
        self._greeting = self._banner_due = True  # nothing goes out until its banner: a report
        self._greet_at = self._last_poll + GREET_RETRY_S  # made before the reset would say "up" too early
        return self.realtime("reset")

    def emergency_stop(self) -> bytes:
        return self.soft_reset()

    def discard_job(self) -> int:
        n = len(self._job)
        self._job.clear()
        return n

    # ---- bytes out ----------------------------------------------------------------------------
    def data_to_send(self, now: float) -> bytes:
        """As many queued lines as the RX ring can take; settings writes go one at a time."""
        if self._faulted or self._greeting or now < self._quiet_until:
            return b""
        out = bytearray()
        while not self._sync_wait:
            src = self._host if self._host else self._job
            if not src:
                break
            text, tag = src[0]
            sync = bool(SYNC_RE.match(text))
            if sync and self.window.lines:
                break
            wire = plain(text)
            if not self.window.fits(len(wire)):
                break
            src.popleft()
            self._seq += 1
            if not self.window.lines:
                self._wait_since = now
            self.window.push(SentLine(self._seq, text, wire, tag, long=text.upper().startswith("$H")))
            out += wire
            if sync:
                self._sync_wait = True
        return bytes(out)

    def urgent_data(self) -> bytes:
        out = b"".join(self._urgent)
        self._urgent.clear()
        return out

    # ---- bytes in -----------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        if not data:
            return
        self._rx += data
        while True:
            nl = self._rx.find(b"\n")
            if nl < 0:
                if len(self._rx) > 4096:
                    del self._rx[:-256]
                return
            line = bytes(self._rx[:nl]).decode("utf-8", "replace").strip("\r\x00 ")
            del self._rx[: nl + 1]
            self.lines_heard += bool(line)
            if line:
                self._handle(line, now)

    def events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def _emit(self, event: ev.Event) -> None:
        self._events.append(event)

    def _handle(self, line: str, now: float) -> None:
        if self._greeting and (line == "ok" or line.startswith("error:")):
            return  # answers to lines written before we connected: none of ours
        if line == "ok":
            self._wait_since = now
            self._retire()
        elif line.startswith("error:"):
            self._wait_since = now
            self._on_error(line)
        elif line.startswith("<") and line.endswith(">"):
            self._last_status = now
            self._on_status(line[1:-1], now)
        elif line.startswith("ALARM:"):
            code = _int(line[6:])
            self.alarm_locked = True
            self._emit(ev.Alarm(code, alarm_meaning(code)))
            self.window.clear()
            # a job cannot go on after an alarm, except our own reset while moving (ALARM:3)
            if self._job_active and not (code == 3 and self._expect_reset):
                self._fault(f"ALARM:{code} {alarm_meaning(code)}", f"alarm-{code}")
        elif BANNER_RE.match(line):
            self._on_banner(line, now)
        elif m := SETTING_RE.match(line):
            self.settings[m.group(1)] = m.group(2)
            self._emit(ev.Setting(m.group(1), m.group(2)))
        elif line.startswith("[") and line.endswith("]"):
            self._on_bracket(line[1:-1])
        else:
            self._emit(ev.Message(line))

    def oldest_unanswered(self) -> SentLine | None:
        """The line the controller is working on (or will read next): the first with no ok yet."""
        return self.window.oldest()

    def _retire(self) -> SentLine | None:
        line = self.window.pop_oldest()
        if line is None:
            return None
        self._sync_wait = False
        self._emit(ev.LineAcked(line.seq, line.text, line.tag, len(line.wire)))
        if line.text.upper() == "$I":
            self.firmware_name = self.firmware_name or f"Grbl {self.version}".strip()
            self._info_ready = True
            self._info_if_ready()
        return line

    def _info_if_ready(self) -> None:
        """Identity once both `$I` and a status report are in: the driver then knows whether it is alarmed."""
        if self._info_ready and self._status_seen:
            self._info_ready = False
            self._emit(ev.FirmwareInfo(self.firmware_name, dict(self.capabilities)))

    def _on_error(self, line: str) -> None:
        code = _int(line[6:])
        self.errors += 1
        sent = self._retire()
        text = sent.text if sent else "?"
        self._emit(
            ev.FirmwareWarning(
                f"error:{code} {error_meaning(code)} in {text!r}",
                sent.seq if sent else None,
                sent.tag if sent else None,
            )
        )

    def _on_status(self, body: str, now: float) -> None:
        parts = body.split("|")
        state, _, sub = parts[0].partition(":")
        self.state, self.substate = state, (_int(sub) if sub else None)
        self.alarm_locked = state == "Alarm"  # also a controller found already in alarm at connect
        if self._greeting and not self._banner_due:
            self._greeted(now)  # it answers: up and reading, and nothing of ours is in flight
        self._status_seen = True
        self._info_if_ready()
        fields = {}
        for part in parts[1:]:
            key, _, value = part.partition(":")
            fields[key] = value
        if "Bf" in fields:
            nums = fields["Bf"].split(",")
            if len(nums) == 2:
                self.planner_free, self.rx_free = _int(nums[0]), _int(nums[1])
        self._emit(ev.MachineStatus(state, self.substate, fields, self.planner_free, self.rx_free))
        if "WCO" in fields:
            self._offset(fields["WCO"])
        if "MPos" in fields and (axes := _axes(fields["MPos"])):
            self._emit(ev.Position(axes))
        elif "WPos" in fields and (axes := _axes(fields["WPos"])):  # $10=0: work position; machine = + WCO
            self._emit(ev.Position({k: v + self.work_offset.get(k, 0.0) for k, v in axes.items()}))
        self._program_pause()

    def _offset(self, text: str) -> None:
        axes = _axes(text)
        if axes and axes != self.work_offset:
            self.work_offset = axes
            self._emit(ev.WorkOffset(dict(axes)))

    def _program_pause(self) -> None:
        """M0 (M1) stops at `Hold:0` with its own ok held back until a cycle start: a person is awaited.
        Reported once per pause line; a hold of ours (pause, cancel) has no pause line in front."""
        oldest = self.window.oldest()
        if self.state != "Hold" or self.substate != 0 or oldest is None or oldest.seq == self._waiting_on:
            return
        if command_word(oldest.text) in PROGRAM_PAUSES:
            self._waiting_on = oldest.seq
            self._emit(ev.UserWait(oldest.text, oldest.tag))

    def cycle_start(self) -> bytes:
        """`~`: a person has done what a program pause (or a hold) waited for."""
        return CYCLE_START

    def _on_banner(self, line: str, now: float) -> None:
        self.firmware_name = line.split("[")[0].strip()
        expected = self._expect_reset
        self._expect_reset = False
        lost = bool(self.window.lines) or bool(self._job)
        self.window.clear()
        self._host.clear()
        self._sync_wait = False
        self.state, self._status_seen, self._info_ready = "Reset", False, False
        self._urgent.append(STATUS)
        self._greeted(now, BANNER_QUIET_S)
        mid_job = self._job_active and not expected
        self._emit(ev.FirmwareReset(line, mid_job))
        if mid_job or (lost and not expected):
            self._fault(
                "the controller reset mid-job (power, USB or reset switch); it lost its plan "
                "and position - never resumed blindly",
                "firmware-reset",
            )

    def _on_bracket(self, body: str) -> None:
        if body.startswith("VER:"):
            self.version = body[4:].rstrip(":")
        elif body.startswith("MSG:"):
            msg = body[4:]
            if "'$X' to unlock" in msg or msg == "Reset to continue":
                self.alarm_locked = True
            elif msg == "Caution: Unlocked":
                self.alarm_locked = False
            if msg == "Enabled":
                self.check_mode = True
            elif msg == "Disabled":
                self.check_mode = False
                self._expect_reset = True  # leaving check mode soft-resets the controller
        elif body.startswith("PRB:"):
            where, _, touched = body[4:].rpartition(":")
            self._emit(ev.ProbeResult(_axes(where) or {}, touched == "1"))
        elif m := OPT_RE.match(body):
            self.planner_blocks = int(m.group(2))
            rx = int(m.group(3))
            if rx > 0:  # trust the controller's own figure when it is smaller than the profile's
                self.window.limit = min(self.profile.window_bytes, rx - 1)
        self._emit(ev.Message(body[4:] if body.startswith("MSG:") else body))

    def _fault(self, reason: str, code: str) -> None:
        if not self._faulted:
            self._faulted = True
            self._emit(ev.Fault(reason, code))

    def unlock(self) -> None:
        """`$X`: a person has checked the machine after an alarm; it may move again."""
        self._faulted = False
        self._host.append(("$X", None))

    # ---- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Poll status (best effort, <= 5 Hz) and watch for an ok that never comes."""
        poll = max(self.profile.timeouts.status_poll_s, 0.2)
        if now - self._last_poll >= poll:
            self._last_poll = now
            self._urgent.append(STATUS)
        if self._greeting and now >= self._greet_at:
            self._greet_at = now + GREET_RETRY_S
            self._expect_reset = True
            self._urgent.append(SOFT_RESET)
        if self._faulted or not self.window.lines:
            return
        alive = self._last_status > self._wait_since and self.state in ("Run", "Hold", "Jog", "Home", "Door")
        if alive:
            self._wait_since = self._last_status
            return
        timeouts = self.profile.timeouts
        oldest = self.window.oldest()
        limit = timeouts.long_command_s if oldest is not None and oldest.long else timeouts.ok_s
        if now - self._wait_since < limit:
            return
        if self.state == "Idle" and self.rx_free is not None and self._last_status > self._wait_since:
            # Idle with an empty planner and we still wait: the oks were lost; the lines ran.
            while self.window.lines:
                self._retire()
            return
        self._fault(f"no answer from the controller for {limit:g} s", "no-answer")


def _axes(text: str) -> dict[str, float] | None:
    """`1.000,-2.5,3` as {"X": 1.0, "Y": -2.5, "Z": 3.0}; None if a number is not one."""
    try:
        return {AXES[i]: float(v) for i, v in enumerate(text.split(",")[: len(AXES)])}
    except ValueError:
        return None


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return -1
