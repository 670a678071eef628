"""A Tasmota plug with energy monitoring (Sonoff POW / Athom / Nous A1T) on a real MQTT broker, from
Tasmota's documentation (tasmota.github.io/docs: MQTT, Commands, Power Monitoring), default FullTopic
`%prefix%/%topic%/`:

- `tele/<topic>/LWT`: `Online` (retained) on connect, `Offline` as its last will;
- `cmnd/<topic>/POWER` with `ON`, `OFF`, `TOGGLE`, `1`, `0` or an empty payload (a query): answered
  `stat/<topic>/RESULT` `{"POWER":"ON"}` then `stat/<topic>/POWER` `ON`;
- `cmnd/<topic>/STATUS` `10` (sensors; `8` in older releases): answered `stat/<topic>/STATUS10`
  `{"StatusSNS":{"Time":…,"ENERGY":{…}}}`;
- every TelePeriod: `tele/<topic>/STATE` `{"Time":…,"Uptime":…,"POWER":"ON",…}` and
  `tele/<topic>/SENSOR` `{"Time":…,"ENERGY":{"TotalStartTime","Total","Yesterday","Today","Period","Power",
  "ApparentPower","ReactivePower","Factor","Voltage","Current"}}`.

`load_w` is what the machine behind it draws while the relay is on; `go_offline()` plays the plug
losing its Wi-Fi (the broker then publishes its will)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class TasmotaPlug:
    def __init__(
        self,
        port: int,
        topic: str,
        tele_period_s: float = 10.0,
        username: str | None = None,
        password: str = "",
    ) -> None:
        self.topic, self.tele_period_s = topic, tele_period_s
        self.power = False
        self.load_w = 0.0
        self.switched: list[tuple[float, bool]] = []  # (monotonic, on) for each POWER ON/OFF
        self.commands: list[tuple[str, str]] = []
        self._total_kwh = 0.0
        self._since = time.monotonic()
        self._stop = threading.Event()
        self.connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"DVES_{topic[-6:].upper()}", protocol=mqtt.MQTTv311
        )
        c.will_set(f"tele/{topic}/LWT", "Offline", qos=1, retain=True)
        if username:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        self.client = c
        assert self.connected.wait(10), "the emulated Tasmota plug could not connect"
        self._tele = threading.Thread(target=self._telemetry, daemon=True)
        self._tele.start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.publish(f"tele/{self.topic}/LWT", "Online", qos=1, retain=True)
        client.subscribe(f"cmnd/{self.topic}/#", qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        command = msg.topic.rsplit("/", 1)[1].upper()
        payload = msg.payload.decode().strip()
        self.commands.append((command, payload))
        if command in ("POWER", "POWER1"):
            self._power(payload.upper())
        elif command == "STATUS" and payload in ("8", "10"):
            body = {"StatusSNS": {"Time": _now(), "ENERGY": self._energy()}}
            client.publish(f"stat/{self.topic}/STATUS{payload}", json.dumps(body), qos=1)
        else:
            client.publish(f"stat/{self.topic}/RESULT", json.dumps({"Command": "Unknown"}), qos=1)

    def _power(self, word: str) -> None:
        if word in ("ON", "1", "TRUE", "OFF", "0", "FALSE", "TOGGLE", "2"):
            self._account()
            self.power = not self.power if word in ("TOGGLE", "2") else word in ("ON", "1", "TRUE")
            self.switched.append((time.monotonic(), self.power))
        state = "ON" if self.power else "OFF"
        self.client.publish(f"stat/{self.topic}/RESULT", json.dumps({"POWER": state}), qos=1)
        self.client.publish(f"stat/{self.topic}/POWER", state, qos=1)

    def _account(self) -> None:
        now = time.monotonic()
        self._total_kwh += (self.load_w if self.power else 0.0) * (now - self._since) / 3.6e6
        self._since = now

    def _energy(self) -> dict[str, Any]:
        self._account()
        watts = self.load_w if self.power else 0.0
        return {"TotalStartTime": "2026-01-04T09:12:51", "Total": round(self._total_kwh, 3), "Yesterday": 0.0,
                "Today": round(self._total_kwh, 3), "Period": 0, "Power": round(watts), "ApparentPower": round(watts * 1.05),
                "ReactivePower": round(watts * 0.3), "Factor": 0.95 if watts else 0.0, "Voltage": 229,
                "Current": round(watts / 229, 3)}  # fmt: skip

    def _telemetry(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.tele_period_s):
            state = {"Time": _now(), "Uptime": f"0T00:{int(time.monotonic() - start) // 60:02d}:00",
                     "POWER": "ON" if self.power else "OFF", "Wifi": {"AP": 1, "RSSI": 78}}  # fmt: skip
            self.client.publish(f"tele/{self.topic}/STATE", json.dumps(state), qos=0)
            self.client.publish(
                f"tele/{self.topic}/SENSOR", json.dumps({"Time": _now(), "ENERGY": self._energy()})
            )

    def set_load(self, watts: float) -> None:
        self._account()
        self.load_w = watts

    def go_offline(self) -> None:
        """The plug drops off the network without a goodbye: the broker publishes its will."""
        self._stop.set()
        self.client.loop_stop()
        self.client.socket().close()

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
