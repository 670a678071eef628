"""A Shelly Gen2+ metering relay (Plus Plug S / Plus 1PM) on loopback HTTP, from Shelly's Gen2 API docs
(shelly-api-docs.shelly.cloud/gen2: RPC over HTTP, ComponentsAndServices/Switch):

- `POST /rpc` with a JSON-RPC 2.0-style frame `{"id", "src", "method", "params"}`, answered
  `{"id", "src": <device id>, "result": …}` or `{"id", "src", "error": {"code", "message"}}`;
- `GET /rpc/<Method>?<params>` answered with the bare result;
- `Switch.Set {id, on}` -> `{"was_on"}`; `Switch.GetStatus {id}` -> `id, source, output, apower, voltage,
  current, pf, aenergy {total, by_minute, minute_ts}, temperature {tC, tF}`;
  `Shelly.GetDeviceInfo` -> `name, id, mac, model, gen, fw_id, ver, app, auth_en`.

`load_w` is what the machine behind it draws while the relay is on (set by the test); `silent = True`
makes it stop answering, as a plug off the Wi-Fi does (the connection is dropped)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from typing import Any


class ShellyPlug:
    DEVICE_ID = "shellyplusplugs-e86beae7a1c0"

    def __init__(self) -> None:
        self.output = False
        self.load_w = 0.0
        self.silent = False
        self.calls: list[tuple[float, str, dict[str, Any]]] = []  # (monotonic, method, params)
        self.switched: list[tuple[float, bool]] = []  # (monotonic, on) for each Switch.Set
        self.changes: list[tuple[float, float]] = []  # (monotonic, watts drawn from then on)
        self._energy_wh = 0.0
        self._since = time.monotonic()
        self._lock = threading.Lock()
        plug = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if plug.silent:
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length", "0"))
                frame = json.loads(self.rfile.read(length) or b"{}")
                result, error = plug.call(frame.get("method", ""), frame.get("params") or {})
                reply: dict[str, Any] = {"id": frame.get("id"), "src": ShellyPlug.DEVICE_ID}
                reply.update({"error": error} if error else {"result": result})
                self._send(200, reply)

            def do_GET(self) -> None:
                if plug.silent:
                    self.close_connection = True
                    return
                url = urllib.parse.urlsplit(self.path)
                if not url.path.startswith("/rpc/"):
                    self._send(404, {"code": 404, "message": "not found"})
                    return
                params = {k: _value(v) for k, v in urllib.parse.parse_qsl(url.query)}
                result, error = plug.call(url.path[5:], params)
                self._send(400 if error else 200, error if error else result)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_load(self, watts: float) -> None:
        """The machine behind the plug starts (or stops) drawing `watts` while the relay is on."""
        with self._lock:
            self._account()
            self.load_w = watts
            self.changes.append((time.monotonic(), watts))

    def _account(self) -> None:
        now = time.monotonic()
        self._energy_wh += (self.load_w if self.output else 0.0) * (now - self._since) / 3600
        self._since = now

    def call(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
        with self._lock:
            self.calls.append((time.monotonic(), method, dict(params)))
            if method not in ("Shelly.GetDeviceInfo",) and params.get("id", 0) != 0:
                return None, {"code": -105, "message": f"Argument 'id', value {params.get('id')} not found!"}
            if method == "Switch.Set":
                if not isinstance(params.get("on"), bool):
                    return None, {"code": -103, "message": "Missing required argument 'on'!"}
                self._account()
                was_on, self.output = self.output, params["on"]
                self.switched.append((time.monotonic(), self.output))
                return {"was_on": was_on}, None
            if method == "Switch.GetStatus":
                self._account()
                watts = self.load_w if self.output else 0.0
                return {
                    "id": 0, "source": "HTTP_in", "output": self.output, "apower": round(watts, 1),
                    "voltage": 231.4, "current": round(watts / 231.4, 3), "pf": 0.93 if watts else 0.0,
                    "aenergy": {"total": round(self._energy_wh, 3), "by_minute": [0.0, 0.0, 0.0],
                                "minute_ts": int(time.time()) // 60 * 60},
                    "temperature": {"tC": 38.1, "tF": 100.6},
                }, None  # fmt: skip
            if method == "Shelly.GetDeviceInfo":
                return {"name": None, "id": self.DEVICE_ID, "mac": "E86BEAE7A1C0", "model": "SNPL-00112EU",
                        "gen": 2, "fw_id": "20231107-164738/1.0.8-g8c7bb8d", "ver": "1.0.8", "app": "PlusPlugS",
                        "auth_en": False, "auth_domain": None}, None  # fmt: skip
            return None, {"code": 404, "message": f"No handler for {method}"}

    def busy_s(self, threshold_w: float, start: float, end: float) -> float:
        """The truth: seconds between `start` and `end` during which the relay was on and the load above
        the threshold (from the load changes and switchings the test made)."""
        events = sorted(
            [(t, "load", w) for t, w in self.changes] + [(t, "relay", on) for t, on in self.switched]
        )
        load, relay, last, busy = 0.0, False, start, 0.0
        for t, kind, value in events:
            if t > start:
                seg_end = min(t, end)
                if seg_end > last and relay and load > threshold_w:
                    busy += seg_end - last
                last = max(last, min(t, end))
            if kind == "load":
                load = float(value)
            else:
                relay = bool(value)
        if end > last and relay and load > threshold_w:
            busy += end - last
        return busy

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(text: str) -> Any:
    """GET parameters are JSON values (`on=true`, `id=0`)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
