"""The topic tree, one place: `<prefix>/<site>/<machine>/<leaf>`, documented in docs/mqtt.md.

The fleet dashboard and the booking system import only this module to find their topics.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUS = "status"  # retained: what the machine is doing now
TELEMETRY = "telemetry"  # rate-limited, coalesced
PICTURE = "picture"  # retained: the camera's latest thumbnail (JPEG, base64), when the machine has one
EVENTS = "events"  # QoS 1, from the ledger's outbox
USAGE = "usage"  # QoS 1, from the outbox until acknowledged
USAGE_ACK = "usage/ack"  # booking system -> agent: {"record_id": ...}
COMMAND = "command"  # manager -> agent, signed
HA_BUTTON = "ha/button"  # Home Assistant's buttons -> agent (opt-in): pause | resume | cancel; ACL: HA only
KINDS_TO_LEAF = {"event": EVENTS, "usage": USAGE, "usage-copy": USAGE}  # usage-copy: nobody acknowledges


@dataclass(frozen=True)
class Topics:
    """Topic names of one site under one prefix."""

    prefix: str = "afn/v1"
    site: str = "lab"

    def machine(self, machine_id: str, leaf: str) -> str:
        return f"{self.prefix}/{self.site}/{machine_id}/{leaf}"

    def agent(self, agent_id: str) -> str:
        """Retained availability of an agent process: online / offline (the last will)."""
        return f"{self.prefix}/{self.site}/_agents/{agent_id}"

    def consumer(self, name: str) -> str:
        """Retained availability of a booking-side usage consumer: online / offline (its last will)."""
        return f"{self.prefix}/{self.site}/_consumers/{name}"

    def consumers(self) -> str:
        return self.consumer("+")

    def directory(self) -> str:
        """Retained member directory snapshot from the booking system (access issue)."""
        return f"{self.prefix}/{self.site}/_directory/snapshot"

    def directory_delta(self) -> str:
        return f"{self.prefix}/{self.site}/_directory/delta"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(machine id, leaf) of a topic in this site, or None."""
        head = f"{self.prefix}/{self.site}/"
        if not topic.startswith(head):
            return None
        machine, _, leaf = topic[len(head) :].partition("/")
        return (machine, leaf) if machine and leaf else None
