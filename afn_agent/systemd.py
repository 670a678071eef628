"""systemd integration without a dependency: sd_notify over $NOTIFY_SOCKET, and a watchdog that is
fed only while every machine thread is alive and turning (a stuck thread makes systemd restart us)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send one sd_notify message (READY=1, STATUS=…, WATCHDOG=1, STOPPING=1); False outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


class Watchdog:
    """Pings at half of systemd's WatchdogSec, and only when `healthy()` says so."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        self.enabled = usec > 0 and (pid is None or pid == str(os.getpid()))
        self.every = usec / 2e6 if self.enabled else 0.0
        self.healthy = healthy
        self.last = 0.0
        self.withheld = 0

    def maybe_ping(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        if self.healthy():
            notify("WATCHDOG=1")
        else:
            self.withheld += 1  # systemd will kill and restart us when the interval runs out
