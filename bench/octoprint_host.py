"""OctoPrint as a host beside afn-agent in bench/cpu.py: its server streams the same files to the same
simulator, and the CPU its process spends on each print is read from /proc.

OctoPrint runs in its own Python (a throwaway venv: `python3 -m venv /tmp/op && /tmp/op/bin/pip install
octoprint`), headless, from a fresh base directory: one admin user, HTTP Basic authentication trusted
(the bench's requests carry it, with the CSRF token the server hands out), no network checks. Both
files are uploaded and analysed before the first print starts, so the prints' CPU is streaming: the
serial thread, its parsing of every answer, the events and the job's progress. The bench polls the job
state every half second, as a browser tab's updates would cost it too.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.cookiejar
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from afn_agent.sim.run import SimProcess

USER, PASSWORD = "bench", "bench-bench"
CONFIG = """accessControl:
  trustBasicAuthentication: true
server:
  firstRun: false
  onlineCheck: {{enabled: false}}
  pluginBlacklist: {{enabled: false}}
serial:
  port: {port}
  baudrate: {baud}
  additionalPorts: ["{port}"]
  autoconnect: true
plugins:
  tracking: {{enabled: false}}
  announcements: {{enabled: false}}
"""


class OctoPrint:
    """One OctoPrint server on a loopback port, driven over its REST API."""

    def __init__(self, python: str, sim_link: Path, baud: int, work: Path) -> None:
        self.python, self.link, self.baud, self.work = python, sim_link, baud, work
        self.base = work / "octoprint"
        self.base.mkdir()
        self.port = _free_port()
        self.cookies = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar := http.cookiejar.CookieJar())
        )
        self.jar = jar
        self.csrf = ""
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OctoPrint:
        (self.base / "config.yaml").write_text(CONFIG.format(port=self.link, baud=self.baud))
        subprocess.run([self.python, "-m", "octoprint", "--basedir", str(self.base), "user", "add", USER,
                        "--password", PASSWORD, "--admin"], check=True, capture_output=True)  # fmt: skip
        log = open(self.work / "octoprint.log", "wb")  # noqa: SIM115 - the server's whole life
        serve = [self.python, "-m", "octoprint", "serve", "--iknowwhatimdoing", "--basedir", str(self.base),
                 "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT)
        self._until(lambda: self._state() == "Operational", 120, "OctoPrint connected to the simulator")
        self.cookies.open(self._request("/"), timeout=30).read()  # hands out the CSRF token
        self.csrf = next(c.value or "" for c in self.jar if c.name.startswith("csrf_token"))
        return self

    def upload(self, path: Path) -> None:
        boundary = "afn-bench-boundary"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        self._api("/api/files/local", body, f"multipart/form-data; boundary={boundary}")
        self._until(lambda: self._analysed(path.name), 120, f"OctoPrint's analysis of {path.name}")

    def print_file(self, name: str) -> dict[str, Any]:
        """Print an uploaded file; the server's CPU and the seconds from the start to the end."""
        cpu, started = self._cpu_s(), time.monotonic()
        self._api(f"/api/files/local/{name}", json.dumps({"command": "select", "print": True}).encode())
        self._until(lambda: self._job()["state"].startswith("Printing"), 30, "the print started")
        self._until(lambda: not self._job()["state"].startswith("Printing"), 7200, "the print ended")
        job = self._job()
        done = job["state"] == "Operational" and (job.get("progress") or {}).get("completion") == 100
        return {"cpu_s": self._cpu_s() - cpu, "seconds": time.monotonic() - started,
                "outcomes": ["completed" if done else job["state"]]}  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- the REST API ----------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, ctype: str = "") -> urllib.request.Request:
        headers = {"Authorization": self.auth}
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        if ctype:
            headers["Content-Type"] = ctype
        return urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers)

    def _api(self, path: str, data: bytes | None = None, ctype: str = "application/json") -> Any:
        with self.cookies.open(self._request(path, data, ctype if data else ""), timeout=60) as r:
            body = r.read()
        return json.loads(body) if body else None

    def _state(self) -> str:
        try:
            return str(self._api("/api/connection")["current"]["state"])
        except (urllib.error.URLError, OSError, http.client.HTTPException):  # not up yet
            return ""

    def _job(self) -> dict[str, Any]:
        job: dict[str, Any] = self._api("/api/job")
        return job

    def _analysed(self, name: str) -> bool:
        info = self._api(f"/api/files/local/{name}")
        return bool(info.get("gcodeAnalysis"))

    def _cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def _until(self, done: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"OctoPrint exited awaiting {what}: see {self.work}/octoprint.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {seconds:g} s: see {self.work}/octoprint.log")
            time.sleep(0.5)  # real time: OctoPrint's own pace, polled as its web page polls


def octoprint_run(
    python: str, baud: int, files: dict[int, Path], work: Path, move_ms: float
) -> dict[Any, Any]:
    """OctoPrint printing the short and the long file, one server: each print's CPU, or an error."""
    run = Path(tempfile.mkdtemp(prefix="octoprint-", dir=work))
    sim = SimProcess("marlin", run, baud=baud, move_ms=move_ms).start()
    server = OctoPrint(python, sim.link, baud, run)
    try:
        server.start()
        for path in files.values():
            server.upload(path)
        return {n: server.print_file(path.name) for n, path in sorted(files.items())}
    except (RuntimeError, OSError, urllib.error.URLError, subprocess.CalledProcessError) as exc:
        return {"error": str(exc)}
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            sim.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
