"""Home Assistant MQTT discovery (off by default): a lab running Home Assistant sees its machines as
devices with state, progress, job, temperatures, "in use" and lock entities, without configuring anything.

Nothing here names a member: Home Assistant keeps every state in its long-term history, so the topic tree
under `homeassistant/` carries only whether a machine is in use. Buttons (pause, resume, cancel) are
opt-in and write to a topic the broker's ACL lets only Home Assistant's user publish on (docs/mqtt.md).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..machine.events import MachineState
from .topics import HA_BUTTON, STATUS, TELEMETRY, Topics

PREFIX = "homeassistant"
BUTTONS = ("pause", "resume", "cancel")  # what a press may ask; the agent refuses it in the wrong state
PRINTER_HEATERS = ("T", "B")  # announced for every printer at once; others (T1, C …) when first reported
HEATER_NAMES = {"T": "Nozzle", "B": "Bed", "C": "Chamber", "P": "Probe"}
HEATER_ID = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,7}$")  # what a heater's name may be to become an entity
ORIGIN = {"name": "afn-agent", "sw_version": __version__}
NONE = "None"  # a template that renders this sets the entity to unknown (HA's MQTT PAYLOAD_NONE)


@dataclass(frozen=True)
class Machine:
    """What discovery needs to know of one machine."""

    id: str
    machine_class: str
    kind: str  # printer | mill | laser
    url: str | None  # its page on this agent, for the device's "Visit" link


def node_id(site: str, machine_id: str) -> str:
    return f"afn_{site}_{machine_id}"


def heater_name(heater: str) -> str:
    """'T' -> 'Nozzle', 'T1' -> 'Nozzle 1', 'B' -> 'Bed'; an unknown name stays as the firmware says it."""
    head, number = heater[:1], heater[1:]
    if head in HEATER_NAMES and (number == "" or number.isdigit()):
        return f"{HEATER_NAMES[head]} {number}".strip()
    return heater


def entities(machine: Machine, buttons: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, object id, config without the common fields) of one machine's fixed entities."""
    job = "value_json.job"
    eta = f"{{{{ {job}.eta_s | round(0) if {job} else '{NONE}' }}}}"
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "state", {"name": "State", "device_class": "enum",
                             "options": [s.value for s in MachineState],
                             "value_template": "{{ value_json.state }}"}),
        ("sensor", "progress", {"name": "Progress", "unit_of_measurement": "%", "state_class": "measurement",
                                "suggested_display_precision": 0,
                                "value_template": f"{{{{ ({job}.progress * 100) | round(1) if {job} else "
                                                  f"'{NONE}' }}}}"}),
        ("sensor", "job", {"name": "Job", "icon": "mdi:file-cog-outline",
                           "value_template": f"{{{{ {job}.name if {job} else '{NONE}' }}}}"}),
        ("sensor", "time_left", {"name": "Time left", "device_class": "duration", "unit_of_measurement": "s",
                                 "value_template": eta}),
        ("binary_sensor", "in_use", {"name": "In use", "device_class": "occupancy",
                                     "value_template": "{{ 'ON' if value_json.session or value_json.job "
                                                       "else 'OFF' }}"}),
        ("binary_sensor", "locked", {"name": "Locked out", "icon": "mdi:lock-alert",
                                     "value_template": "{{ 'ON' if value_json.locked else 'OFF' }}"}),
        ("binary_sensor", "alarm", {"name": "Alarm", "device_class": "problem",
                                    "value_template": "{{ 'ON' if value_json.state in ('alarm', 'fault') "
                                                      "else 'OFF' }}"}),
    ]  # fmt: skip
    if buttons:
        out += [("button", f"{b}_job", {"name": f"{b.capitalize()} job", "payload_press": b})
                for b in BUTTONS]  # fmt: skip
    return out


def heater_entities(heater: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The actual and target temperature of one heater, from the telemetry topic."""
    name, key = heater_name(heater), heater.lower()
    common = {"device_class": "temperature", "unit_of_measurement": "°C", "state_class": "measurement",
              "suggested_display_precision": 1}  # fmt: skip
    temps = "value_json.temperatures"

    def pick(i: int) -> str:
        return f"{{{{ {temps}['{heater}'][{i}] if '{heater}' in {temps} else '{NONE}' }}}}"

    return [
        ("sensor", f"temp_{key}", {**common, "name": f"{name} temperature", "value_template": pick(0)}),
        ("sensor", f"target_{key}", {**common, "name": f"{name} target", "value_template": pick(1)}),
    ]


class Discovery:
    """The retained discovery configs of one agent's machines; heaters announced as they are first seen."""

    def __init__(self, topics: Topics, agent_id: str, machines: list[Machine], buttons: bool) -> None:
        self.topics, self.agent_id, self.buttons = topics, agent_id, buttons
        self.machines = {m.id: m for m in machines}
        self.heaters: dict[str, set[str]] = {
            m.id: set(PRINTER_HEATERS) if m.kind == "printer" else set() for m in machines
        }
        self._lock = threading.Lock()  # heaters grow in the bus pump; all() runs in paho's thread

    def all(self) -> list[tuple[str, str]]:
        """(topic, payload) of every entity of every machine: sent retained on each connection."""
        out = []
        with self._lock:
            heaters = {machine: sorted(known) for machine, known in self.heaters.items()}
        for m in self.machines.values():
            out += [self._message(m, *e) for e in entities(m, self.buttons)]
            for heater in heaters[m.id]:
                out += [self._message(m, *e) for e in heater_entities(heater)]
        return out

    def new_heaters(self, machine_id: str, temperatures: dict[str, Any]) -> list[tuple[str, str]]:
        """Configs for heaters this machine reports for the first time (a second extruder, a chamber)."""
        m, known = self.machines.get(machine_id), self.heaters.get(machine_id)
        if m is None or known is None:
            return []
        with self._lock:
            fresh = sorted(h for h in temperatures if h not in known and HEATER_ID.match(h))[:8]
            known.update(fresh)
        return [self._message(m, *e) for h in fresh for e in heater_entities(h)]

    def _message(self, m: Machine, component: str, obj: str, fields: dict[str, Any]) -> tuple[str, str]:
        node = node_id(self.topics.site, m.id)
        device: dict[str, Any] = {"identifiers": [node], "name": m.id, "manufacturer": "afn-agent",
                                  "model": f"{m.kind} ({m.machine_class})",
                                  "sw_version": __version__}  # fmt: skip
        if m.url:
            device["configuration_url"] = m.url
        config = {
            "unique_id": f"{node}_{obj}",
            "object_id": f"{m.id}_{obj}".replace("-", "_"),
            "availability_topic": self.topics.agent(self.agent_id),
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": ORIGIN,
            **fields,
        }
        if component == "button":
            config["command_topic"] = self.topics.machine(m.id, HA_BUTTON)
        else:
            leaf = TELEMETRY if obj.startswith(("temp_", "target_")) else STATUS
            config["state_topic"] = self.topics.machine(m.id, leaf)
        payload = json.dumps(config, sort_keys=True, ensure_ascii=False)
        return f"{PREFIX}/{component}/{node}/{obj}/config", payload
