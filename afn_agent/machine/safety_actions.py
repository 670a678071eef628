"""What the machine thread does to make a machine safe: the profile's safe state on request (also
before anything else after a crash), the stall guard's out-of-band stop, and host scripts such as the
idle heat guard's heaters-off. A mixin of `Machine`: these run on the machine's own thread, except
`safe_state` and `run_script`, which only post to it."""

from __future__ import annotations

import time

from ..firmware.grbl import GrblProtocol


class SafetyActions:
    def safe_state(self, reason: str) -> None:
        """Bring the machine to its profile's safe state now, or as soon as it is connected."""
        if self.state in ("disconnected", "connecting"):
            self._safe_pending = reason  # the connection runs it once the firmware answers
        else:
            self._post("safe", reason)

    def run_script(self, name: str, lines: tuple[str, ...]) -> None:
        """Send host commands to an idle machine (the idle heat guard's heaters-off)."""
        self._post("script", name, lines)

    def _break_waits(self, bursts: int = 4, quiet_s: float = 0.5) -> None:
        """Before talking to a firmware left mid-job: it may sit in heating waits (M190, then M109...)
        that answer nothing. Each M108 through the emergency parser ends one; M410 drops planned moves.
        What it answers meanwhile is the old job's and is read and dropped."""
        for _ in range(bursts):
            self.link.write(self.core.break_waits())
            deadline = time.monotonic() + quiet_s
            while time.monotonic() < deadline and not self._closing:
                if b"ok" in self.link.wait(0.1):
                    deadline = time.monotonic() + quiet_s  # still draining: wait for it to go quiet

    def _cmd_safe(self, reason: str) -> None:
        if self.state not in ("idle", "alarm"):
            self._safe_pending = reason  # run once the firmware has answered the handshake
            return
        self._safe_pending = ""
        actions: list[str] = []
        if isinstance(self.core, GrblProtocol):
            self.link.write(self.core.realtime("hold"))
            self.link.write(self.core.soft_reset())  # stops spindle and laser, empties the planner
            actions += ["feed hold", "soft reset"]
            self._after_reset = lambda: self._send_script(self.profile.scripts.safe_state)
        else:
            self._send_script(self.profile.scripts.safe_state)
        actions += list(self.profile.scripts.safe_state)
        self._emit("safe-state", {"reason": reason, "actions": actions})

    def _cmd_script(self, name: str, lines: tuple[str, ...]) -> None:
        if self.state == "idle" and self._job is None:
            self._send_script(lines)
            self._emit("script", {"name": name, "lines": list(lines)})

    def _send_script(self, lines: tuple[str, ...]) -> None:
        for line in lines:
            self.core.send(line, host=True)

    def _stall(self, now: float) -> None:
        """A job whose firmware went silent: alarm now, safe state after the profile's grace."""
        if not self._stall_since:
            self._stall_since = now
            grace = self.profile.timeouts.stall_grace_s
            self._emit("stall", {"silent_s": self.profile.timeouts.ok_s, "safe_state_in_s": grace})

    def _stalled_safe_state(self) -> None:
        """The firmware stopped answering and the grace is over: stop it by the out-of-band way."""
        self._stall_since = 0.0
        if isinstance(self.core, GrblProtocol):
            self._urgent(self.core.realtime("hold") + self.core.soft_reset())
            actions = ["feed hold", "soft reset"]
        else:
            self._urgent(self.core.emergency_stop())  # the emergency parser acts on it, queue stuck or not
            actions = ["M112"]
        if self._job is not None:
            self._finish("failed", "the firmware stopped answering (stall)", "stall")
        self._set_state("fault")
        self._emit("safe-state", {"reason": "stall", "actions": actions})
