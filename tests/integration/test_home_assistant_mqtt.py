"""Home Assistant over MQTT, on a real Mosquitto with the deploy ACLs: the discovery configs a printer
publishes (checked with HA's own schemas and template engine when HA is installed in .cache/ha, else
against HA's documented fields), no member id anywhere under homeassistant/, and the opt-in buttons that
only HA's broker user can press."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.machine.events import MachineState
from tests.broker import Client, free_port
from tests.helpers import api_table, wait_for
from tests.integration.test_bus import config_for, small_job

ROOT = Path(__file__).resolve().parents[2]
HA_PYTHON = ROOT / ".cache" / "ha" / "bin" / "python"
HA_READY = ROOT / ".cache" / "ha" / "installed"  # written by deploy/dev-setup.sh once the install went through
CHECK = ROOT / "tests" / "ha" / "check_discovery.py"
MEMBER = "ana-0042"
# Fields HA 2024.3.3 (the newest that runs on Python 3.11) drops but newer HA reads: the enum sensor's
# `options`, added to the MQTT sensor in HA 2024.9 (home-assistant/core#123248).
NEWER_FIELDS = {"options"}
# HA's MQTT documentation, the fields this agent may publish per component (sensor.mqtt, binary_sensor.mqtt,
# button.mqtt and the common availability/device/origin blocks).
COMMON = {"name", "unique_id", "object_id", "availability_topic", "availability_template", "payload_available",
          "payload_not_available", "device", "origin", "icon", "value_template", "state_topic", "device_class"}
DOCUMENTED = {
    "sensor": COMMON | {"unit_of_measurement", "state_class", "options", "suggested_display_precision"},
    "binary_sensor": COMMON,
    "button": COMMON - {"value_template", "state_topic"} | {"command_topic", "payload_press"},
}  # fmt: skip
DEVICE_FIELDS = {"identifiers", "name", "manufacturer", "model", "sw_version", "configuration_url"}
SENSOR_CLASSES = {"enum", "duration", "temperature"}
BINARY_CLASSES = {"occupancy", "problem"}


@pytest.fixture
def lab(tmp_path, broker, start_sim):
    sim = start_sim("marlin", speed=4)
    config = config_for(tmp_path, broker, [sim])
    port = free_port()
    config.write_text(config.read_text() + "home_assistant = true\nhome_assistant_buttons = true\n"
                      + api_table(port=port))  # fmt: skip
    ha = Client(broker, "homeassistant")
    ha.subscribe("homeassistant/#")
    ha.subscribe("afn/v1/fablab/#")
    cfg = load_config(config)
    agent = Agent(cfg).start()
    assert agent.machines["printer-1"].wait_ready(15)
    wait_for(agent.bus.connected.is_set, 10, "bus connection")
    yield agent, cfg, ha, broker, port
    agent.stop()
    ha.close()


def seen(c: Client, part: str) -> list[tuple[str, str]]:
    """(topic, payload as text) of what `c` received on topics containing `part`."""
    return [(t, p.decode()) for t, p, _ in c.received() if part in t]


def press(c: Client, payload: str) -> None:
    c.client.publish("afn/v1/fablab/printer-1/ha/button", payload, qos=1).wait_for_publish(5)


def configs(ha: Client) -> dict[str, dict]:
    return {t: json.loads(p) for t, p in seen(ha, "homeassistant/") if t.endswith("/config")}


def test_discovery_has_temperatures_enum_state_no_member_and_validates(lab, tmp_path):
    agent, cfg, ha, _, port = lab
    submit(cfg, agent.ledger, "printer-1", small_job(tmp_path, segments=3000), "test", member_id=MEMBER)
    wait_for(lambda: agent.control.running_job("printer-1") is not None, 15, "the job running")
    wait_for(lambda: any(MEMBER in p for t, p in seen(ha, "/status")), 10, "a status naming the member")
    wait_for(lambda: any('"T"' in p for t, p in seen(ha, "/telemetry")), 10, "telemetry with T")
    found = configs(ha)
    node = "homeassistant/sensor/afn_fablab_printer-1"
    state = found[f"{node}/state/config"]
    assert state["device_class"] == "enum" and state["options"] == [s.value for s in MachineState]
    for heater in ("t", "b"):
        for what in ("temp", "target"):
            temp = found[f"{node}/{what}_{heater}/config"]
            assert temp["device_class"] == "temperature" and temp["state_class"] == "measurement"
            assert temp["state_topic"] == "afn/v1/fablab/printer-1/telemetry" and temp["unit_of_measurement"] == "°C"
    assert found[f"{node}/progress/config"]["state_class"] == "measurement"
    device = state["device"]
    assert device["sw_version"] and device["configuration_url"].endswith(f":{port}/kiosk/printer-1")
    assert found["homeassistant/binary_sensor/afn_fablab_printer-1/in_use/config"]["device_class"] == "occupancy"
    assert not any("member" in t for t in found), "no member entity"
    assert {t.split("/")[1] for t in found} == {"sensor", "binary_sensor", "button"}
    # no member id anywhere under homeassistant/, although the status HA reads does carry it
    assert not [t for t, p in seen(ha, "homeassistant/") if MEMBER in p]
    payloads: dict[str, list[str]] = {}
    for t, p in seen(ha, "afn/v1/fablab/"):
        payloads.setdefault(t, []).append(p)
    agent.stop()  # says offline (retained): the availability template must render it
    wait_for(lambda: any('"offline"' in p for t, p in seen(ha, "/_agents/")), 10, "offline")
    payloads["afn/v1/fablab/_agents/pi-printers"] = [p for t, p in seen(ha, "/_agents/")]
    documented(found)
    if HA_READY.exists():
        with_home_assistant(found, payloads)
    else:
        print("Home Assistant is not installed in .cache/ha (CI=1 or AFN_WITH_HA=1 ./deploy/dev-setup.sh): "
              "checked against HA's documented fields only")


def documented(found: dict[str, dict]) -> None:
    """HA's documented discovery fields, device classes and the enum sensor's rules (sensor.mqtt)."""
    for topic, config in found.items():
        component = topic.split("/")[1]
        assert set(config) <= DOCUMENTED[component], (topic, set(config) - DOCUMENTED[component])
        assert set(config["device"]) <= DEVICE_FIELDS and config["device"]["identifiers"]
        assert config["unique_id"].startswith("afn_fablab_printer-1_")
        if component == "sensor" and "device_class" in config:
            assert config["device_class"] in SENSOR_CLASSES
        if component == "binary_sensor" and "device_class" in config:
            assert config["device_class"] in BINARY_CLASSES
        if "options" in config:
            assert config["device_class"] == "enum" and config["options"]
            assert "state_class" not in config and "unit_of_measurement" not in config
        if component == "button":
            assert config["command_topic"] == "afn/v1/fablab/printer-1/ha/button"


def with_home_assistant(found: dict[str, dict], payloads: dict[str, list[str]]) -> None:
    """HA's DISCOVERY_SCHEMA per platform, and every template rendered by HA on the real payloads."""
    data = {"configs": [[t, json.dumps(c)] for t, c in found.items()], "payloads": payloads}
    done = subprocess.run([str(HA_PYTHON), str(CHECK)], input=json.dumps(data), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["errors"] == [], result["errors"]
    assert all(set(keys) <= NEWER_FIELDS for keys in result["dropped"].values()), result["dropped"]
    rendered = result["rendered"]
    states = set(rendered["afn_fablab_printer-1_state:value_template"])
    assert "printing" in states and states <= {s.value for s in MachineState}
    nozzle = rendered["afn_fablab_printer-1_temp_t:value_template"]  # unknown before the first report
    assert [v for v in nozzle if v != "None"] and all(v == "None" or 0 <= float(v) < 400 for v in nozzle)
    progress = [v for v in rendered["afn_fablab_printer-1_progress:value_template"] if v != "None"]
    assert progress and all(0 <= float(v) <= 100 for v in progress)
    assert set(rendered["afn_fablab_printer-1_in_use:value_template"]) >= {"ON"}
    assert set(rendered["afn_fablab_printer-1_state:availability_template"]) == {"online", "offline"}
    assert not [v for vs in rendered.values() for v in vs if MEMBER in v or v == "<unrendered>"]


def test_buttons_are_pressed_by_home_assistant_only_and_audited(lab, tmp_path):
    agent, cfg, ha, broker, _ = lab
    submit(cfg, agent.ledger, "printer-1", small_job(tmp_path, segments=6000), "test", member_id=MEMBER)
    wait_for(lambda: agent.machines["printer-1"].state == MachineState.PRINTING, 15, "printing")
    fleet = Client(broker, "fleet")  # a broker user the ACL does not let write the button topic
    press(fleet, "pause")
    presses = lambda: [a for a in agent.ledger.audit_log("printer-1", 200) if a["action"].startswith("button:")]  # noqa: E731
    press(ha, "pause")
    wait_for(lambda: agent.machines["printer-1"].state == MachineState.PAUSED, 10, "paused by HA")
    press(ha, "pause")  # not printing any more: refused, and said so
    press(ha, "format-disk")
    wait_for(lambda: len(presses()) >= 3, 10, "three presses audited")
    assert [(a["action"], a["result"]) for a in reversed(presses())] == [
        ("button:pause", "done"), ("button:pause", "refused"), ("button:format-disk", "refused")]
    assert all(a["actor"] == "homeassistant" for a in presses())
    press(fleet, "resume")  # dropped by the broker: the job stays paused
    press(ha, "cancel")
    wait_for(lambda: agent.control.running_job("printer-1") is None, 15, "cancelled by HA")
    assert [a["action"] for a in presses()].count("button:resume") == 0
    fleet.close()
