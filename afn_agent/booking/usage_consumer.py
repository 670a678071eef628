"""The booking side's usage consumer, runnable as several instances sharing the load: an MQTT 5 shared
subscription (`$share/<group>/<prefix>/<site>/+/usage`) hands each record to one instance; it is stored
keyed by its id (a repeat is absorbed), then acknowledged on `<machine>/usage/ack`. An instance that dies
between the two leaves the record unacknowledged: the agent's outbox sends it again, to whichever
instance is alive. Sessions are clean on purpose: a dead member's persistent session would stay in the
group and keep taking its share of the records (Mosquitto 2 queues them for it), while the agents'
outboxes already keep every record until it is acknowledged. A reference for a lab's booking connector,
and the consumer of `afn-agent consume`.

On a broker speaking only MQTT 3.1.1 (`protocol = "3.1.1"`: NATS's MQTT gateway) there are no shared
subscriptions: one instance subscribes to every record, still with a clean session (docs/mqtt.md). With
`session = "clean"` the subscription is QoS 0: a record lost on the way is sent again by its agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..bus import nodes
from ..bus.topics import USAGE, USAGE_ACK, Topics
from ..bus.version import first_version
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

    def __init__(self, broker: BrokerConfig, sites: Sequence[str], store: UsageStore, name: str,
                 group: str = "booking"):  # fmt: skip
        self.broker, self.store, self.name = broker, store, name
        self.topics = [Topics(broker.topic_prefix, site) for site in sites]  # a lab each
        self.v5 = first_version(broker) == mqtt.MQTTv5
        every = [f"{t.prefix}/{t.site}/+/{USAGE}" for t in self.topics]
        self.filters = [f"$share/{group}/{f}" if self.v5 else f for f in every]
        self.nodes = nodes.of(broker)
        self.received = self.new = self.malformed = 0
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"afn-usage-{sites[0]}-{name}",
                                  protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
                                  clean_session=None if self.v5 else True)  # fmt: skip
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
        # "online" (on connecting, every lab) makes the agents send what is unacknowledged at once; the
        # will, one per connection in MQTT, says "offline" in the first lab only: a hint, never relied on
        self.client.will_set(self.topics[0].consumer(name), self._availability("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.nodes.attach(self.client, lambda *a: self.connected.clear())

    def start(self) -> UsageConsumer:
        host, port = self.nodes.current
        if not self.v5:
            self.client.connect_async(host, port, self.broker.keepalive_s)
            self.client.loop_start()
            return self
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0  # see the module's docstring: the group, not the broker, waits
        self.client.connect_async(host, port, self.broker.keepalive_s, clean_start=True, properties=props)
        self.client.loop_start()
        return self

    def _availability(self, state: str) -> str:
        return json.dumps({"consumer": self.name, "state": state, "t": time.time()})

    def stop(self) -> None:
        if self.connected.is_set():
            for t in self.topics:
                gone = self._availability("offline")
                info = self.client.publish(t.consumer(self.name), gone, qos=1, retain=True)
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the consumer (%s)", self.name, reason)
            return
        qos = 0 if self.broker.session == "clean" else 1
        client.subscribe([(f, qos) for f in self.filters])
        for t in self.topics:
            client.publish(t.consumer(self.name), self._availability("online"), qos=1, retain=True)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Store, then acknowledge: paho's PUBACK follows this function's return. Nothing escapes."""
        self.received += 1
        lab, where = next(((t, w) for t in self.topics if (w := t.parse(msg.topic)) is not None),
                          (self.topics[0], None))  # fmt: skip
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
        client.publish(lab.machine(machine, USAGE_ACK), ack, qos=1)


def load(path: str | Path) -> tuple[BrokerConfig, list[str], str, str]:
    """(broker, sites, store, group) from a consumer file; a ConfigError lists every mistake at once."""
    from ..config import ConfigError, broker_config, validated
    from ..config_errors import sentences
    from ..config_model import ConsumerFile

    file = Path(path)
    model, raw, text, found = validated(ConsumerFile, file)
    if model is None or found:
        raise ConfigError("\n".join(sentences(found, file, raw, text)))
    c = model.consumer
    return broker_config(model.broker), [c.site, *c.labs], c.store, c.group
