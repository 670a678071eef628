"""Run by Home Assistant's own Python (a venv with the `homeassistant` package, .cache/ha): validates each
discovery config with the MQTT platform's DISCOVERY_SCHEMA, as HA does on receipt, and renders each value
and availability template with HA's template engine on the payloads the agent really published.

stdin: {"configs": [[topic, payload], ...], "payloads": {topic: [payload, ...]}}
stdout: {"version": ..., "errors": [...], "dropped": {topic: [keys]}, "rendered": {unique_id: [...]}}
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile

from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

from homeassistant.components.mqtt.const import CONF_ORIGIN  # isort: skip
from homeassistant.components.mqtt.mixins import MQTT_ORIGIN_INFO_SCHEMA  # isort: skip


def flatten(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= flatten(v, prefix + k + ".")
    return out


async def main() -> None:
    data = json.load(sys.stdin)
    hass = HomeAssistant(tempfile.mkdtemp())
    result: dict = {"version": HA_VERSION, "errors": [], "dropped": {}, "rendered": {}}
    for topic, payload in data["configs"]:
        component = topic.split("/")[1]
        schema = importlib.import_module(f"homeassistant.components.mqtt.{component}").DISCOVERY_SCHEMA
        config = json.loads(payload)
        try:
            if CONF_ORIGIN in config:
                MQTT_ORIGIN_INFO_SCHEMA(config[CONF_ORIGIN])
            valid = schema(dict(config))
        except Exception as exc:  # voluptuous.Invalid and friends: the message says which key
            result["errors"].append(f"{topic}: {exc}")
            continue
        kept = flatten({k: v for k, v in valid.items()})
        dropped = sorted(k for k in flatten(config) if k not in kept)
        if dropped:
            result["dropped"][topic] = dropped
        for key, source in (("value_template", "state_topic"), ("availability_template", "availability_topic")):
            if key not in config:
                continue
            template = Template(config[key], hass)
            values = [template.async_render_with_possible_json_value(p, "<unrendered>")
                      for p in data["payloads"].get(config[source], [])]
            result["rendered"][f"{config['unique_id']}:{key}"] = values
    await hass.async_stop(force=True)
    print(json.dumps(result))


asyncio.run(main())
