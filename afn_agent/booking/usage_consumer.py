"""The booking side's usage consumer, runnable as several instances sharing the load: an MQTT 5 shared
subscription (`$share/<group>/<prefix>/<site>/+/usage`) hands each record to one instance; it is stored
keyed by its id (a repeat is absorbed), then acknowledged on `<machine>/usage/ack`. An instance that dies
between the two leaves the record unacknowledged: the agent's outbox sends it again, to whichever
instance is alive. Sessions are clean on purpose: a dead member's persistent session would stay in the
group and keep taking its share of the records (Mosquitto 2 queues them for it), while the agents'
outboxes already keep every record until it is acknowledged. A reference for a lab's booking connector,
and the consumer of `afn-agent consume`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..bus import nodes
from ..bus.topics import USAGE, USAGE_ACK, Topics
from ..config import BrokerConfig
from ..payload import Malformed, decode_json

log = logging.getLogger("afn_agent.consumer")

MAX_RECORD = 65536


class UsageStore:
    """Records by id, in SQLite (WAL): what the booking system would bill from."""

    def __init__(self, path: str | Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS usage(record_id TEXT PRIMARY KEY, machine TEXT NOT NULL, "
            "received_at REAL NOT NULL, consumer TEXT NOT NULL, record TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def keep(self, record: dict[str, Any], machine: str, consumer: str) -> bool:
        """True when the record is new; a repeat (a resend, another instance's) changes nothing."""
        with self._lock:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO usage(record_id, machine, received_at, consumer, record) "
                "VALUES(?,?,?,?,?)",
                (record["record_id"], machine, time.time(), consumer, json.dumps(record, sort_keys=True)),
            )
        return cur.rowcount == 1

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])


class UsageConsumer:
    """One instance of the group; `start` connects and joins, `stop` leaves."""

    def __init__(self, broker: BrokerConfig, site: str, store: UsageStore, name: str, group: str = "booking"):
        self.broker, self.store, self.name = broker, store, name
        self.topics = Topics(broker.topic_prefix, site)
        self.filter = f"$share/{group}/{self.topics.prefix}/{site}/+/{USAGE}"
        self.nodes = nodes.of(broker)
        self.received = self.new = self.malformed = 0
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"afn-usage-{site}-{name}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.nodes.attach(self.client, lambda *a: self.connected.clear())

    def start(self) -> UsageConsumer:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0  # see the module's docstring: the group, not the broker, waits
        host, port = self.nodes.current
        self.client.connect_async(host, port, self.broker.keepalive_s, clean_start=True, properties=props)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the consumer (%s)", self.name, reason)
            return
        client.subscribe(self.filter, qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Store, then acknowledge: paho's PUBACK follows this function's return. Nothing escapes."""
        self.received += 1
        where = self.topics.parse(msg.topic)
        try:
            record = decode_json(bytes(msg.payload), max_bytes=MAX_RECORD)
            if where is None or not isinstance(record, dict) or not isinstance(record.get("record_id"), str):
                raise Malformed("not a usage record")
        except Malformed as exc:
            self.malformed += 1
            log.warning("%s: a message on %s is not a usage record (%s)", self.name, msg.topic, exc)
            return
        machine = where[0]
        try:
            self.new += self.store.keep(record, machine, self.name)
        except sqlite3.Error as exc:  # not stored: not acknowledged; the agent sends it again
            log.error("%s: record %s not stored (%s)", self.name, record["record_id"], exc)
            return
        ack = json.dumps({"record_id": record["record_id"]})
        client.publish(self.topics.machine(machine, USAGE_ACK), ack, qos=1)


def load(path: str | Path) -> tuple[BrokerConfig, str, str, str]:
    """(broker, site, store, group) from a consumer file; a ConfigError lists every mistake at once."""
    from ..config import ConfigError, broker_config, validated
    from ..config_errors import sentences
    from ..config_model import ConsumerFile

    file = Path(path)
    model, raw, text, found = validated(ConsumerFile, file)
    if model is None or found:
        raise ConfigError("\n".join(sentences(found, file, raw, text)))
    c = model.consumer
    return broker_config(model.broker), c.site, c.store, c.group
