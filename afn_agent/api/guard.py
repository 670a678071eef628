"""Connections the HTTP server will hold: a ceiling in total and per client, and deadlines for headers
and bodies, so that idle or trickling clients cannot use up the process's file descriptors.

uvicorn has neither a header timeout nor a connection cap (its `limit_concurrency` answers 503 only
once a request has been read). ~1,100 idle connections filled the 1024-fd table: /health stopped
answering and the next job failed to open its file. `Guard` is consulted as each connection opens and
sweeps every second; the protocol class that calls it is uvicorn's own h11 one, subclassed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("afn_agent.api")
RESERVED_FDS = 64  # the ledger (db, WAL, shm), logs, the MQTT socket, spool files, Python itself
FDS_PER_MACHINE = 4  # its port, the wake-up pipe, a job file
REPORT_EVERY_S = 10.0
LOCAL = ("127.0.0.1", "::1")  # the kiosk's browser and health probes on this host
LOCAL_RESERVE = 8  # connections only they may take: remote clients filling the rest cannot lock them out


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one (systemd's LimitNOFILE); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_ceiling(configured: int, machines: int, fd_limit: int | None = None) -> int:
    """At most `configured` connections, and never so many that machines and the ledger lack fds."""
    limit = fd_limit if fd_limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    spare = limit - RESERVED_FDS - FDS_PER_MACHINE * machines
    return max(LOCAL_RESERVE + 8, min(configured, spare))


class Guard:
    """Counts open connections by client and closes the ones that break a limit or a deadline."""

    def __init__(self, max_total: int, max_per_client: int, header_s: float, body_s: float) -> None:
        self.max_total, self.max_per_client = max_total, max_per_client
        self.header_s, self.body_s = header_s, body_s
        self.open: set[GuardedH11] = set()
        self.per_client: Counter[str] = Counter()
        self.refused = 0  # connections closed as they opened (over a ceiling)
        self.timed_out = 0  # connections closed for want of headers or body in time
        self._sweeper: asyncio.Task[None] | None = None
        self._unreported = 0
        self._reported_at = 0.0

    def admit(self, conn: GuardedH11, client: str) -> bool:
        ceiling = self.max_total if client in LOCAL else self.max_total - LOCAL_RESERVE
        if len(self.open) >= ceiling or self.per_client[client] >= self.max_per_client:
            self.refused += 1
            self._note(f"refusing connections over the limit ({self.max_total} in all, "
                       f"{self.max_per_client} per client; latest from {client})")  # fmt: skip
            return False
        self.open.add(conn)
        self.per_client[client] += 1
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return True

    def release(self, conn: GuardedH11, client: str) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    async def _sweep(self) -> None:
        while self.open:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.open):
                why = conn.overdue(now, self.header_s, self.body_s)
                if why:
                    self.timed_out += 1
                    self._note(f"closing a connection from {conn.client_key}: {why}")
                    conn.transport.abort()  # connection_lost follows: uvicorn's cleanup, then release

    def _note(self, message: str) -> None:
        """Log at most once per REPORT_EVERY_S, counting the rest: a flood must not fill the disk."""
        now = time.monotonic()
        if now - self._reported_at >= REPORT_EVERY_S:
            more = f" (and {self._unreported} more since the last report)" if self._unreported else ""
            log.warning("%s%s", message, more)
            self._reported_at, self._unreported = now, 0
        else:
            self._unreported += 1


def guarded_protocol(guard: Guard) -> type[H11Protocol]:
    """uvicorn's h11 protocol, bound to `guard` (uvicorn takes a class for `http=`)."""
    return type("GuardedProtocol", (GuardedH11,), {"guard": guard})


class GuardedH11(H11Protocol):
    guard: Guard
    client_key = ""
    waiting_since: float | None = None  # when the current request's first byte (or the connection) came
    last_data = 0.0
    admitted = False  # refused connections never reach uvicorn's own bookkeeping

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self.client_key = str(peer[0]) if peer else "?"
        if not self.guard.admit(self, self.client_key):
            transport.abort()  # the fd goes back at once; nothing is read or parsed
            self.transport = transport
            return
        self.admitted = True
        self.waiting_since = self.last_data = time.monotonic()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return  # refused as it opened: uvicorn never knew it
        self.guard.release(self, self.client_key)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.last_data = now
        if self.conn.their_state is h11.IDLE and self.waiting_since is None:
            self.waiting_since = now
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self.waiting_since = None

    def overdue(self, now: float, header_s: float, body_s: float) -> str:
        """Why this connection should close now ('' if it should not)."""
        state = self.conn.their_state
        if state is h11.IDLE and self.waiting_since is not None and now - self.waiting_since > header_s:
            return f"no complete request headers within {header_s:g} s"
        if state is h11.SEND_BODY and now - self.last_data > body_s:
            return f"request body stalled for {body_s:g} s"
        return ""
