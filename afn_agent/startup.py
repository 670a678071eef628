"""What `run` checks between a valid configuration and the first message it publishes: the ledger opens,
the API's port is free, the broker answers and admits the agent. Each failure is one sentence and its own
exit code (README, "Exit codes"); before these checks, a taken port ended in a traceback after "online"
and the Home Assistant discovery had already gone out.

The broker is probed at the TCP and TLS level only: an MQTT connection under the agent's user name (its
client id on the lab's broker) would end the agent's persistent session and drop what waits in it. The
broker's own answer to the agent's credentials is the bus's first CONNACK (`Bus.refused`), awaited before
`run` says it is running; a refused CONNACK publishes nothing. A broker that is only out of reach (down,
still booting, the network away) is said in one sentence and the agent runs on its outbox — a Pi that
boots before the lab's server, or restarts during a broker outage, must still run its machines — unless
`[broker] required = true`.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from enum import IntEnum

from .bus import nodes
from .config import AgentConfig, BrokerConfig


class Exit(IntEnum):
    """The CLI's exit codes (README, "Exit codes")."""

    OK = 0
    FAILED = 1  # what was asked ran and did not succeed (a job that did not complete, nothing to revoke)
    INVALID = 2  # bad arguments, or a configuration or input file that is wrong (the message names it)
    NO_MACHINE = 3  # no firmware answered on the port
    JOB_REFUSED = 4  # the job does not fit the machine or breaks its policy
    ACCESS_REFUSED = 5  # the member may not use the machine now
    LEDGER = 6  # the ledger cannot be opened (damaged, not a database, unreadable)
    PORT_TAKEN = 7  # the API's address is in use
    BROKER_DOWN = 8  # the broker cannot be reached (name, network, refused, TLS)
    BROKER_REFUSED = 9  # the broker refused the agent (user, password, not authorised)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the agent does not start: one sentence and the exit code that says it. `passing`: it may mend
    by itself (a broker still booting, a network down); the agent then runs on its outbox unless told
    otherwise ([broker] required)."""

    code: Exit
    sentence: str
    passing: bool = False


def api_port(cfg: AgentConfig) -> Failure | None:
    """The API's address is free (bound and released at once, as uvicorn will bind it: SO_REUSEADDR)."""
    if cfg.api is None or cfg.api.port == 0:
        return None
    host, port = cfg.api.host, cfg.api.port
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return Failure(Exit.INVALID, f"{cfg.path}: [api].host {host!r} does not resolve ({exc.strerror})")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Failure(Exit.PORT_TAKEN, f"the API's port {port} on {host} is already in use (another "
                               f"afn-agent or OctoPrint? `ss -ltnp 'sport = :{port}'` names it); set another "
                               f"[api].port in {cfg.path}")  # fmt: skip
            return Failure(Exit.PORT_TAKEN, f"the API cannot listen on {host}:{port} ({exc.strerror}); "
                           f"check [api] in {cfg.path}")  # fmt: skip
    return None


def broker(cfg: AgentConfig, timeout_s: float = 5.0) -> Failure | None:
    """One of the broker's addresses (host, then its nodes) resolves, takes a TCP connection and, with
    TLS, shows a certificate the configured CA vouches for under that host name; else why the first
    one did not."""
    b = cfg.broker
    if b is None:
        return None
    failures = [_node(cfg, b, host, port, timeout_s) for host, port in nodes.of(b).addresses]
    if None in failures:
        return None
    return failures[0]


def _node(cfg: AgentConfig, b: BrokerConfig, host: str, port: int, timeout_s: float) -> Failure | None:
    others = f" (nor do its {len(b.nodes)} other node(s))" if b.nodes else ""
    where = f"the broker at {host}:{port}{others} ([broker] in {cfg.path})"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        return Failure(Exit.BROKER_DOWN, f"{where}: the name does not resolve ({exc.strerror})", True)
    except TimeoutError:
        return Failure(Exit.BROKER_DOWN, f"{where} does not answer within {timeout_s:g} s (down, or a "
                       "firewall drops the connection)", True)  # fmt: skip
    except OSError as exc:
        return Failure(Exit.BROKER_DOWN, f"{where} cannot be reached ({exc.strerror}): is Mosquitto "
                       "running there?", True)  # fmt: skip
    with sock:
        if b.tls:
            return _tls_handshake(sock, b, host, port, where)
    return None


def _tls_handshake(sock: socket.socket, b: BrokerConfig, host: str, port: int, where: str) -> Failure | None:
    context = ssl.create_default_context(cafile=b.ca_file)
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return Failure(Exit.BROKER_DOWN, f"{where}: its TLS certificate is not accepted "
                       f"({exc.verify_message}); check [broker].ca_file and that the broker's "
                       f"certificate names {host}")  # fmt: skip
    except (ssl.SSLError, OSError) as exc:
        return Failure(Exit.BROKER_DOWN, f"{where}: no TLS handshake ({exc}); is {port} its TLS port?")


def refused_sentence(cfg: AgentConfig, reason: str) -> Failure:
    b = cfg.broker
    assert b is not None
    return Failure(Exit.BROKER_REFUSED, f"the broker at {b.host}:{b.port} refused the agent as user "
                   f"{b.username!r} ({reason}): check [broker].username and password in {cfg.path} "
                   "and the broker's password file and ACL")  # fmt: skip
