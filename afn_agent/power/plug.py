"""One machine's power, owned by one thread: it switches the relay (and the extraction's) to what the
rules want, reads the power drawn every `poll_s`, and reports through the machines' event queue.

Nothing else touches the switch: a slow or dead device (a plug off the Wi-Fi takes seconds to time
out) holds up only this thread, never the pump, the API or the machine's serial thread."""

from __future__ import annotations

import logging
import queue
import threading
import time

from ..machine import events as me
from .switches import Switch, Unreachable

log = logging.getLogger("afn_agent.power")
UNREACHABLE_AFTER_S = 3.0


class Plug:
    """A machine's power switch: `want()` from any thread; the fields are the thread's last reading."""

    def __init__(
        self,
        machine_id: str,
        switch: Switch,
        events: queue.Queue[me.MachineEvent],
        safe_side: str,
        poll_s: float = 1.0,
        extraction: Switch | None = None,
    ) -> None:
        self.machine_id, self.switch, self.events = machine_id, switch, events
        self.safe_side, self.poll_s, self.extraction = safe_side, poll_s, extraction
        # published by the plug thread: each value replaced, never changed in place
        self.on: bool | None = None  # the relay as last read (None: never read)
        self.watts: float | None = None
        self.reachable = True
        self.problem = ""
        self.heartbeat = time.monotonic()
        self._wanted: tuple[bool, str] | None = None  # (on, why), set by the rules
        self._wanted_extraction: tuple[bool, str] | None = None
        self._applied: tuple[bool | None, bool | None] = (None, None)
        self._failing_since = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- any thread -------------------------------------------------------------------------------
    def want(self, on: bool, reason: str, extraction: bool | None = None) -> None:
        """What the rules want now; the thread applies a change at once and says so."""
        changed = self._wanted is None or self._wanted[0] != on
        self._wanted = (on, reason)
        if extraction is not None and self.extraction is not None:
            changed |= self._wanted_extraction is None or self._wanted_extraction[0] != extraction
            self._wanted_extraction = (extraction, reason)
        if changed:
            self._wake.set()

    def start(self) -> Plug:
        self._thread = threading.Thread(target=self._run, name=f"power-{self.machine_id}", daemon=True)
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self.switch.close()
        if self.extraction is not None:
            self.extraction.close()

    # ---- the plug thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self._apply()
                self._sample()
                self._failing_since = 0.0
                if not self.reachable:
                    self.reachable, self.problem = True, ""
                    self._emit(me.PowerRestored)
            except Unreachable as exc:
                self._lost(str(exc))
            except Exception as exc:  # a device's odd answer must not end the thread
                log.exception("%s: power switch error", self.machine_id)
                self._lost(f"unexpected answer: {exc}")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _apply(self) -> None:
        wanted, extraction = self._wanted, self._wanted_extraction
        power_done, extraction_done = self._applied
        if wanted is not None and wanted[0] != power_done:
            self.switch.set(wanted[0])
            self._applied = (wanted[0], extraction_done)
            self._emit(me.PowerSwitched, on=wanted[0], reason=wanted[1])
            log.info("%s: power %s (%s)", self.machine_id, "on" if wanted[0] else "off", wanted[1])
        if extraction is not None and self.extraction is not None and extraction[0] != self._applied[1]:
            self.extraction.set(extraction[0])
            self._applied = (self._applied[0], extraction[0])
            self._emit(me.PowerSwitched, on=extraction[0], reason=extraction[1], device="extraction")

    def _sample(self) -> None:
        reading = self.switch.read()
        at = time.monotonic()
        self.on, self.watts = reading.on, reading.watts
        if self._applied[0] is not None and reading.on != self._applied[0]:
            self._applied = (None, self._applied[1])  # switched by hand: set again on the next turn
        self._emit(me.PowerSample, on=reading.on, watts=reading.watts, at=at)

    def _lost(self, why: str) -> None:
        """One failed exchange is not an outage (a plug on Wi-Fi misses one now and then, a broker may still
        be connecting at start): the alarm comes when it has failed for UNREACHABLE_AFTER_S."""
        self._applied = (None, None)  # unknown: set again once it answers
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if self.reachable and now - self._failing_since >= UNREACHABLE_AFTER_S:
            self.reachable, self.problem = False, why
            log.warning("%s: power switch unreachable: %s", self.machine_id, why)
            self._emit(me.PowerUnreachable, reason=why, safe_side=self.safe_side)

    def _emit(self, kind: type[me.MachineEvent], **fields: object) -> None:
        self.events.put(kind(self.machine_id, time.time(), **fields))
