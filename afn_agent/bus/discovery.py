"""Home Assistant MQTT discovery (off by default): a lab running Home Assistant sees its machines as
devices with state, progress, job, member and lock sensors, without configuring anything."""

from __future__ import annotations

import json
from typing import Any

from .topics import STATUS, Topics

PREFIX = "homeassistant"
# (component, object id, name, value template, extra fields)
SENSORS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("sensor", "state", "State", "{{ value_json.state }}", {}),
    ("sensor", "progress", "Progress",
     "{{ ((value_json.job.progress if value_json.job else 0) * 100) | round(1) }}",
     {"unit_of_measurement": "%"}),
    ("sensor", "job", "Job", "{{ value_json.job.name if value_json.job else 'none' }}", {}),
    ("sensor", "member", "Member", "{{ value_json.job.member_id if value_json.job else 'none' }}", {}),
    ("sensor", "eta", "Time left", "{{ value_json.job.eta_s if value_json.job else 0 }}",
     {"unit_of_measurement": "s", "device_class": "duration"}),
    ("binary_sensor", "locked", "Locked out", "{{ 'ON' if value_json.locked else 'OFF' }}", {}),
)  # fmt: skip


def node_id(site: str, machine_id: str) -> str:
    return f"afn_{site}_{machine_id}"


def messages(topics: Topics, agent_id: str, machine_id: str, machine_class: str) -> list[tuple[str, str]]:
    """(topic, retained payload) for every entity of one machine."""
    node = node_id(topics.site, machine_id)
    device = {"identifiers": [node], "name": machine_id, "manufacturer": "afn-agent", "model": machine_class}
    out = []
    for component, obj, name, template, extra in SENSORS:
        config = {
            "name": name,
            "unique_id": f"{node}_{obj}",
            "state_topic": topics.machine(machine_id, STATUS),
            "value_template": template,
            "availability_topic": topics.agent(agent_id),
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
        out.append((f"{PREFIX}/{component}/{node}/{obj}/config", json.dumps(config, sort_keys=True)))
    return out
