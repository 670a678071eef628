"""Tasmota plugs and relays over MQTT, on the lab's broker (Tasmota's default topics, FullTopic
`%prefix%/%topic%/`): `cmnd/<topic>/POWER` ON|OFF answered on `stat/<topic>/POWER`; the power drawn from
`tele/<topic>/SENSOR` and from `cmnd/<topic>/STATUS 10` answered on `stat/<topic>/STATUS10`
(`StatusSNS.ENERGY.Power`, W); `tele/<topic>/LWT` Online|Offline says whether the device is there.

The agent's own MQTT connection carries them; a switch waits for the device's answer and raises
`Unreachable` when none comes."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .switches import Reading, Unreachable, watts_of

log = logging.getLogger("afn_agent.power")
MAX_PAYLOAD = 4096  # a Tasmota message is a few hundred bytes; anything larger is not one


class Carrier(Protocol):
    """The agent's MQTT connection (bus/client.py `Bus`), which carries the Tasmota topics too: one
    connection per agent (the shipped broker takes the user name as the client id, so a second connection
    with the agent's account would throw the first one off)."""

    connected: threading.Event

    def watch(self, pattern: str, handler: Callable[[str, bytes], None]) -> None: ...
    def publish_device(self, topic: str, payload: str) -> None: ...


class TasmotaLink:
    """The agent's Tasmota devices, over its MQTT connection."""

    def __init__(self, carrier: Carrier) -> None:
        self.carrier = carrier
        self.devices: dict[str, TasmotaSwitch] = {}

    def switch(self, topic: str, timeout_s: float = 3.0) -> TasmotaSwitch:
        device = TasmotaSwitch(self, topic, timeout_s)
        self.devices[topic] = device
        for kind in ("stat", "tele"):
            self.carrier.watch(f"{kind}/{topic}/+", self._on_message)
        return device

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Never raises: a malformed message from the broker is logged and dropped."""
        try:
            kind, device_topic, leaf = topic.split("/", 2)
            device = self.devices.get(device_topic)
            if device is not None and len(payload) <= MAX_PAYLOAD:
                device.heard(kind, leaf, payload.decode("utf-8", "replace"))
        except Exception as exc:  # paho's thread must survive any payload
            log.warning("tasmota message on %s dropped: %s", topic, exc)

    def publish(self, topic: str, payload: str) -> None:
        if not self.carrier.connected.is_set():
            raise Unreachable("the agent is not connected to the broker")
        self.carrier.publish_device(topic, payload)

    def close(self) -> None:
        self.devices.clear()


class TasmotaSwitch:
    """One Tasmota device (its first relay)."""

    kind = "tasmota"

    def __init__(self, link: TasmotaLink, topic: str, timeout_s: float) -> None:
        self.link, self.topic, self.timeout_s = link, topic, timeout_s
        self.online: bool | None = None  # from its LWT
        self.on: bool | None = None
        self.watts: float | None = None
        self._power_seq = 0  # answers to POWER, counted
        self._status_seq = 0  # answers to STATUS 10, counted
        self._cond = threading.Condition()

    def heard(self, kind: str, leaf: str, text: str) -> None:
        """A message from the device (paho's thread)."""
        with self._cond:
            if kind == "tele" and leaf == "LWT":
                self.online = text.strip() == "Online"
            elif kind == "stat" and leaf in ("POWER", "POWER1"):
                self.on = text.strip().upper() == "ON"
                self._power_seq += 1
            elif kind == "tele" and leaf in ("SENSOR", "STATE"):
                self._take(json.loads(text))
            elif kind == "stat" and leaf in ("STATUS10", "STATUS8"):
                self._take(json.loads(text).get("StatusSNS", {}))
                self._status_seq += 1
            self._cond.notify_all()

    def _take(self, doc: dict[str, Any]) -> None:
        power = doc.get("POWER", doc.get("POWER1"))
        if isinstance(power, str):
            self.on = power.upper() == "ON"
        energy = doc.get("ENERGY")
        if isinstance(energy, dict) and (watts := watts_of(energy.get("Power"))) is not None:
            self.watts = watts

    def _wait(self, seen: int, counter: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while getattr(self, counter) == seen:
            if self.online is False:
                raise Unreachable(f"tasmota {self.topic} is offline (its LWT)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable(f"tasmota {self.topic}: no answer to {what} in {self.timeout_s:g} s")
            self._cond.wait(left)

    def set(self, on: bool) -> None:
        with self._cond:
            seen = self._power_seq
            self.link.publish(f"cmnd/{self.topic}/POWER", "ON" if on else "OFF")
            self._wait(seen, "_power_seq", "POWER")
            if self.on != on:
                raise Unreachable(f"tasmota {self.topic} answered POWER {'ON' if self.on else 'OFF'}")

    def read(self) -> Reading:
        with self._cond:
            seen = self._status_seq
            self.link.publish(f"cmnd/{self.topic}/STATUS", "10")
            self._wait(seen, "_status_seq", "STATUS 10")
            if self.on is None:  # a device that never said: ask
                seen = self._power_seq
                self.link.publish(f"cmnd/{self.topic}/POWER", "")
                self._wait(seen, "_power_seq", "POWER")
            return Reading(bool(self.on), self.watts)

    def close(self) -> None:
        self.link.devices.pop(self.topic, None)
