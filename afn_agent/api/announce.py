"""Slicers' "Browse" button: every machine announced on the lab's network as an OctoPrint instance
(DNS-SD `_octoprint._tcp` over mDNS, python-zeroconf), with the path of its OctoPrint face, so PrusaSlicer
and Cura list it by name. Announcing is best effort: a network without multicast is logged, never fatal."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from ..config import ANY_HOST

log = logging.getLogger("afn_agent.announce")

SERVICE = "_octoprint._tcp.local."


class Announcer:
    """Registers one service per machine in its own thread (mDNS probing takes a second or two)."""

    def __init__(self, site: str, agent_id: str, machines: list[str], host: str, port: int,
                 interfaces: list[str], version: str) -> None:  # fmt: skip
        self.site, self.agent_id, self.machines = site, agent_id, machines
        self.host, self.port, self.interfaces, self.version = host, port, interfaces, version
        self.registered: list[str] = []
        self.error = ""
        self._zc: Any = None
        self._thread = threading.Thread(target=self._register, name="announce", daemon=True)

    def start(self) -> Announcer:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Until every machine is announced (tests, the CLI)."""
        self._thread.join(timeout)
        return not self._thread.is_alive() and not self.error

    def addresses(self) -> list[str]:
        """The IPv4 addresses the services point to: the API's own (a name is resolved), or every
        interface's but loopback."""
        if self.host not in ANY_HOST:
            resolved = socket.getaddrinfo(self.host, None, socket.AF_INET, socket.SOCK_STREAM)
            return sorted({str(info[4][0]) for info in resolved})
        if self.interfaces:
            return list(self.interfaces)
        import ifaddr

        found = [str(ip.ip) for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)]
        outside = [ip for ip in found if not ip.startswith("127.")]
        return outside or ["127.0.0.1"]

    def _register(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

            addresses = self.addresses()
            chosen = self.host not in ANY_HOST or self.interfaces
            interfaces: Any = addresses if chosen else InterfaceChoice.All
            self._zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            for machine in self.machines:
                name = f"{machine} ({self.site}).{SERVICE}"
                info = ServiceInfo(
                    SERVICE, name, port=self.port, server=f"afn-{self.agent_id}.local.",
                    addresses=[socket.inet_aton(a) for a in addresses],
                    properties={"path": f"/octoprint/{machine}/", "api": "0.1", "version": self.version,
                                "model": machine, "vendor": "afn-agent"},
                )  # fmt: skip
                self._zc.register_service(info, allow_name_change=True)
                self.registered.append(info.name)
            log.info("announced %d machines as %s on %s", len(self.registered), SERVICE, ", ".join(addresses))
        except Exception as exc:  # no multicast, no interface: slicers type the address instead
            self.error = str(exc) or type(exc).__name__
            log.warning("machines not announced on the network (%s): slicers need the address typed", exc)

    def close(self) -> None:
        """Goodbye packets for every service (slicers drop them at once), then the sockets."""
        self._thread.join(5)
        if self._zc is not None:
            try:
                self._zc.close()
            except Exception as exc:  # closing must never hold up the agent's stop
                log.debug("zeroconf close: %s", exc)
