"""Where the agent's events go: the ledger's outbox first (never lost), then a nudge to the bus.

One small object shared by the pump, the control surface, the guards and the access room, so none
of them needs the others to say something happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .ledger import Ledger

log = logging.getLogger("afn_agent.publisher")


class BusLink(Protocol):
    """What the publisher needs of the MQTT bus."""

    def wake(self) -> None: ...
    def status_changed(self, machine_id: str) -> None: ...
    def telemetry(self, machine_id: str, data: dict[str, Any]) -> None: ...
    def picture(self, machine_id: str, data: dict[str, Any]) -> None: ...


class Publisher:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.bus: BusLink | None = None  # set once the bus is up
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []  # e.g. the notifier's offer

    def event(self, machine_id: str, kind: str, data: dict[str, Any]) -> None:
        """An event on the events topic, through the outbox: written now, sent when the broker is up."""
        payload = {"type": kind, "machine": machine_id, "t": time.time(), **data}
        self.ledger.outbox_add("event", machine_id, payload)
        if self.bus is not None:
            self.bus.wake()
        for listener in self.listeners:  # they only queue (never block); one failing must not stop the caller
            try:
                listener(machine_id, kind, data)
            except Exception:
                log.exception("an event listener failed on %s", kind)

    def status_changed(self, machine_id: str) -> None:
        if self.bus is not None:
            self.bus.status_changed(machine_id)

    def telemetry(self, machine_id: str, data: dict[str, Any]) -> None:
        if self.bus is not None:
            self.bus.telemetry(machine_id, data)

    def picture(self, machine_id: str, data: dict[str, Any]) -> None:
        """The machine's latest camera thumbnail, retained on the bus (the fleet's tile); best effort."""
        if self.bus is not None:
            self.bus.picture(machine_id, data)

    def wake(self) -> None:
        if self.bus is not None:
            self.bus.wake()
