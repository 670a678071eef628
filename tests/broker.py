"""A real Mosquitto for tests: a free loopback port, the ACLs from deploy/mosquitto, a password per user."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACL = ROOT / "deploy" / "mosquitto" / "afn.acl"
SHIPPED = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
# The shipped file's settings that name places on a real host; the test broker sets its own.
PLACES = {"listener", "password_file", "acl_file", "cafile", "certfile", "keyfile", "require_certificate",
          "persistence_location", "allow_anonymous"}  # fmt: skip


def shipped_settings() -> list[str]:
    """The shipped broker config's global settings (limits, client ids, persistence), as tests run them."""
    out = []
    for line in SHIPPED.read_text().splitlines():
        words = line.split()
        if words and not line.startswith("#") and words[0] not in PLACES:
            out.append(line.strip())
    return out


USERS = ("pi-printers", "pi-shop", "booking", "fleet", "printer2-plug", "homeassistant")


def password(user: str) -> str:
    return f"pw-{user}-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, timeout: float, what: str, log) -> None:
    """Until a server just started takes connections on `port`; its log's tail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {log()[-2000:]}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port}")


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=afn-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "pi-printers")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        extra = ["-extfile", "san.ext"] if name == "server" else []
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", *extra)  # fmt: skip
    return {"ca": d / "ca.crt", "server": d / "server.crt", "server_key": d / "server.key",
            "client": d / "client.crt", "client_key": d / "client.key"}  # fmt: skip


class Broker:
    """Start, stop and restart (same port, same persistence) a Mosquitto process."""

    def __init__(self, workdir: Path, tls: bool = False, open_access: bool = False) -> None:
        if not shutil.which("mosquitto"):
            pytest.fail("mosquitto is not installed (deploy/dev-setup.sh installs it)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        passwd = self.passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{u}:{password(u)}\n" for u in USERS))
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
        self.acl = self.dir / "afn.acl"
        self.acl.write_text(ACL.read_text())
        lines = [
            f"listener {self.port} 127.0.0.1",
            # anonymous clients have no user name to take as their id
            *[
                x
                for x in shipped_settings()
                if not (open_access and x.startswith("use_username_as_clientid"))
            ],
            *(
                ["allow_anonymous true"]
                if open_access
                else ["allow_anonymous false", f"password_file {passwd}", f"acl_file {self.acl}"]
            ),
            "persistence true",  # set by Debian's main mosquitto.conf, which the shipped drop-in adds to
            f"persistence_location {self.dir}/",
            f"log_dest file {self.dir}/mosquitto.log",
            "log_type all",
        ]
        self.tls_port = 0
        if tls:
            self.tls_port = free_port()
            certs = make_certs(self.dir / "certs")
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {certs['ca']}",
                f"certfile {certs['server']}",
                f"keyfile {certs['server_key']}",
                "require_certificate true",
            ]
            self.certs = certs
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, 10, "mosquitto", self.log)
        return self

    def user_for(self, role: str, client_id: str | None) -> str:
        """The shipped config makes a client's id its user name, so two test clients of one role would
        take each other's session: a client with its own id gets its own user, with the role's ACL."""
        if client_id is None or role not in USERS:
            return role
        alias = f"{role}.{client_id}"
        acl = self.acl.read_text()
        if f"user {alias}\n" not in acl:
            block = acl.split(f"user {role}\n", 1)[1].split("\nuser ", 1)[0]
            rules = [line for line in block.splitlines() if line.startswith("topic ")]
            self.acl.write_text(acl + f"\nuser {alias}\n" + "\n".join(rules) + "\n")
            subprocess.run(["mosquitto_passwd", "-b", str(self.passwd), alias, password(role)],
                           check=True, capture_output=True)  # fmt: skip
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGHUP)  # Mosquitto rereads its password and ACL files
                time.sleep(0.3)  # real time: Mosquitto rereads its files (no signal back)
        return alias

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Client:
    """A paho client as the booking system or the fleet would run it; collects what it receives."""

    def __init__(
        self, broker: Broker, user: str, client_id: str | None = None, persistent: bool = False
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrivals: list[tuple[str, float]] = []  # (topic, monotonic time of arrival)
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscriptions: list[tuple[str, int]] = []
        self.on_message = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{user}", protocol=mqtt.MQTTv5
        )
        c.username_pw_set(broker.user_for(user, client_id), password(user))
        c.reconnect_delay_set(0.2, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        c.connect_async("127.0.0.1", broker.port, 10, clean_start=not persistent, properties=props)
        c.loop_start()
        self.client = c
        assert self.connected.wait(10), "test client could not connect"

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if self.subscriptions:
            client.subscribe(self.subscriptions)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.arrivals.append((msg.topic, time.monotonic()))
        if self.on_message:
            self.on_message(msg)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscriptions.append((topic, qos))
        self.client.subscribe(topic, qos)

    def received(self, suffix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
