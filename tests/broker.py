"""A real Mosquitto for tests: a free loopback port, the ACLs from deploy/mosquitto, a password per user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACL = ROOT / "deploy" / "mosquitto" / "afn.acl"
USERS = ("pi-printers", "pi-shop", "booking", "fleet")


def password(user: str) -> str:
    return f"pw-{user}-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Start, stop and restart (same port, same persistence) a Mosquitto process."""

    def __init__(self, workdir: Path) -> None:
        if not shutil.which("mosquitto"):
            pytest.fail("mosquitto is not installed (deploy/dev-setup.sh installs it)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{u}:{password(u)}\n" for u in USERS))
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {ACL}",
            "persistence true",
            f"persistence_location {self.dir}/",
            f"log_dest file {self.dir}/mosquitto.log",
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""
