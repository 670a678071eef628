"""Which MQTT version our clients open with: one rule for the agent's bus and the booking-side consumer."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from ..config import BrokerConfig


def first_version(config: BrokerConfig) -> MQTTProtocolVersion:
    """MQTT 5 unless the configuration says 3.1.1; `auto` starts at 5 and the bus may fall back."""
    return mqtt.MQTTv311 if config.protocol == "3.1.1" else mqtt.MQTTv5
