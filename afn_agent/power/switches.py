"""Power switches behind one small interface: `set(on)` and `read()`, each raising `Unreachable` when the
device does not answer. A Raspberry Pi GPIO relay (gpiod), a Shelly Gen2+ plug over HTTP RPC, and a
simulated relay; Tasmota over MQTT is in tasmota.py. The agent's power rules never see which it is."""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .tasmota import TasmotaLink


class Unreachable(OSError):
    """The switch did not answer (network, device off, wrong address); the message says what failed."""


@dataclass(frozen=True)
class Reading:
    """What a switch says of itself: its relay, and the power through it when it measures one."""

    on: bool
    watts: float | None = None


def watts_of(value: object) -> float | None:
    """A device's power figure, or None: a broken or hostile peer's `true`, `"12"`, NaN or 1e309 (JSON's
    infinity) would otherwise read as a machine busy for ever."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class Switch(Protocol):
    kind: str

    def set(self, on: bool) -> None: ...
    def read(self) -> Reading: ...
    def close(self) -> None: ...


class SimSwitch:
    """A relay in memory (tests, the demo): `load_w` is what the machine draws while switched on, set by
    the test to play a job; `reachable = False` plays a device that stopped answering."""

    kind = "sim"

    def __init__(self) -> None:
        self.on = False
        self.load_w = 0.0
        self.reachable = True
        self.switched: list[bool] = []  # every set(), in order
        self._lock = threading.Lock()

    def set(self, on: bool) -> None:
        with self._lock:
            if not self.reachable:
                raise Unreachable("the simulated relay is unreachable")
            self.on = on
            self.switched.append(on)

    def read(self) -> Reading:
        with self._lock:
            if not self.reachable:
                raise Unreachable("the simulated relay is unreachable")
            return Reading(self.on, self.load_w if self.on else 0.0)

    def close(self) -> None:
        pass


class GpioSwitch:
    """A relay on a Raspberry Pi GPIO line (gpiod v2): driven high for on (`active_low`: low for on)."""

    kind = "gpio"

    def __init__(self, chip: str, line: int, active_low: bool = False) -> None:
        try:
            import gpiod
        except ImportError:
            raise Unreachable("GPIO relays need the gpiod package: pip install gpiod") from None
        path = chip if chip.startswith("/dev/") else f"/dev/{chip}"
        self._gpiod = gpiod
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.OUTPUT,
            output_value=gpiod.line.Value.INACTIVE,
            active_low=active_low,
        )
        try:
            self.request = gpiod.request_lines(path, consumer="afn-agent-power", config={line: settings})
        except OSError as exc:
            raise Unreachable(f"{path} line {line}: {exc.strerror or exc}") from None
        self.line = line

    def set(self, on: bool) -> None:
        value = self._gpiod.line.Value.ACTIVE if on else self._gpiod.line.Value.INACTIVE
        try:
            self.request.set_value(self.line, value)
        except OSError as exc:
            raise Unreachable(f"GPIO line {self.line}: {exc}") from None

    def read(self) -> Reading:
        try:
            return Reading(self.request.get_value(self.line) == self._gpiod.line.Value.ACTIVE)
        except OSError as exc:
            raise Unreachable(f"GPIO line {self.line}: {exc}") from None

    def close(self) -> None:
        self.request.release()


class ShellySwitch:
    """A Shelly Gen2+ relay (Plus Plug S, Plus 1PM, Pro …) over its JSON-RPC HTTP endpoint `/rpc`:
    `Switch.Set {id, on}` and `Switch.GetStatus {id}` (`output`, `apower` in W on metering models)."""

    kind = "shelly"

    def __init__(self, host: str, switch_id: int = 0, timeout_s: float = 2.0) -> None:
        self.url = f"http://{host}/rpc"
        self.switch_id = switch_id
        self.timeout_s = timeout_s
        self._seq = 0

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        self._seq += 1
        frame = {
            "id": self._seq,
            "src": "afn-agent",
            "method": method,
            "params": {"id": self.switch_id, **params},
        }
        req = urllib.request.Request(
            self.url, json.dumps(frame).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read(65536))
        except (OSError, ValueError) as exc:
            raise Unreachable(f"{self.url} {method}: {exc}") from None
        if not isinstance(answer, dict) or "error" in answer or not isinstance(answer.get("result"), dict):
            why = answer.get("error") if isinstance(answer, dict) else answer
            raise Unreachable(f"{self.url} {method} refused: {why}")
        result: dict[str, Any] = answer["result"]
        return result

    def set(self, on: bool) -> None:
        self._call("Switch.Set", on=on)

    def read(self) -> Reading:
        status = self._call("Switch.GetStatus")
        return Reading(bool(status.get("output")), watts_of(status.get("apower")))

    def close(self) -> None:
        pass


class DeadSwitch:
    """A switch that could not be opened (no GPIO chip, no gpiod): unreachable, with the reason."""

    kind = "unavailable"

    def __init__(self, why: str) -> None:
        self.why = why

    def set(self, on: bool) -> None:
        raise Unreachable(self.why)

    def read(self) -> Reading:
        raise Unreachable(self.why)

    def close(self) -> None:
        pass


def make_switch(spec: str, tasmota: TasmotaLink | None) -> Switch:
    """A switch from its config spec (checked by the config against power/spec.py)."""
    kind, _, arg = spec.partition(":")
    if kind == "sim":
        return SimSwitch()
    if kind == "gpio":
        chip, line, *flags = arg.split(":")
        return GpioSwitch(chip, int(line), active_low="active_low" in flags)
    if kind == "tasmota":
        if tasmota is None:
            raise Unreachable("a Tasmota switch needs the agent's [broker]")
        return tasmota.switch(arg)
    host, _, switch_id = arg.partition("#")
    return ShellySwitch(host, int(switch_id or 0))
