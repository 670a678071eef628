"""The broker's addresses, for a clustered broker (or a spare): tried in order, one after another when a
connection fails or drops; a healthy node is kept for as long as it stays up. paho reconnects on its own,
with its doubling backoff, started from a random point between 1 and 2 s per client so that a hundred
agents losing the same node do not come back in step; this only tells it where to go next (docs/mqtt.md).

Used by the agent's bus and the fleet dashboard alike, so both fail over the same way.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger("afn_agent.bus")

FIRST_RETRY_S = (1.0, 2.0)  # paho's first wait before reconnecting, drawn per client (jitter)
MAX_RETRY_S = 60


def parse(address: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return address, default_port


class Nodes:
    """Where to connect now; `attach` makes a paho client move to the next address on each failure."""

    def __init__(
        self, addresses: Sequence[tuple[str, int]], rand: Callable[[], float] = random.random
    ) -> None:
        if not addresses:
            raise ValueError("a broker needs at least one address")
        self.addresses = list(addresses)
        self.index = 0
        self.switches = 0  # times the agent moved to another node
        self.connected_to: tuple[str, int] | None = None  # the node of the last connection (health)
        self.rand = rand
        lo, hi = FIRST_RETRY_S
        self.first_wait = lo + (hi - lo) * rand()  # drawn once per client: the jitter
        self.wait = self.first_wait  # before each attempt of the current round of nodes
        self._up = False  # a connection was made since the last failure
        self._round_start = 0  # the node the current outage started from
        self._lock = threading.Lock()

    @property
    def current(self) -> tuple[str, int]:
        return self.addresses[self.index]

    def attach(self, client: mqtt.Client, on_disconnect: Callable[..., None] | None = None) -> None:
        """Rotate on a failed attempt (paho's on_connect_fail) and after a lost connection; jittered
        backoff. `on_disconnect` and the client's on_connect (set before this) are still called."""
        client.reconnect_delay_set(min_delay=self.first_wait, max_delay=MAX_RETRY_S)  # type: ignore[arg-type]
        client.on_connect_fail = lambda c, userdata: self.failed(c)
        inner = client.on_connect

        def connected(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, *rest: Any) -> None:
            if not reason.is_failure:
                self._up = True
            if inner is not None:
                inner(c, userdata, flags, reason, *rest)

        client.on_connect = connected

        def dropped(c: mqtt.Client, *args: Any) -> None:
            if on_disconnect is not None:
                on_disconnect(c, *args)
            self.failed(c)

        client.on_disconnect = dropped

    def failed(self, client: mqtt.Client) -> None:
        """Point the client at the next address; paho's next reconnect goes there. The wait doubles per
        round of nodes, not per attempt: a dead node's neighbour is tried after the first short wait (a
        node refusing for a few seconds while the cluster elects leaders does not push the next one's
        try a minute away), and a whole cluster down is still retried ever more slowly."""
        if len(self.addresses) == 1:
            return  # paho's own doubling per attempt
        with self._lock:
            if self._up:  # a new outage: short waits again, and the round starts from here
                self._up, self.wait, self._round_start = False, self.first_wait, self.index
            self.index = (self.index + 1) % len(self.addresses)
            if self.index == self._round_start:
                self.wait = min(self.wait * 2, MAX_RETRY_S)
            self.switches += 1
            host, port, wait = *self.current, self.wait
        client.reconnect_delay_set(min_delay=wait, max_delay=MAX_RETRY_S)  # type: ignore[arg-type]
        try:
            client.host, client.port = host, port
        except RuntimeError:
            # paho's setters refuse while it is between attempts (state "connecting"), which is exactly when
            # this runs; its reconnect() reads these two fields (paho 2.x; tests/integration/
            # test_broker_nodes.py fails if that changes)
            client._host, client._port = host, port
        log.warning("broker: trying %s:%s next", host, port)


def of(config: Any) -> Nodes:
    """The addresses of a [broker] table: host:port first, then its `nodes` in order."""
    return Nodes([(config.host, config.port), *(parse(a, config.port) for a in config.nodes)])
