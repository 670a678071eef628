"""The agent's MQTT side: status, telemetry, the outbox (events, usage), commands and acknowledgements.

paho's network loop runs in a thread this module owns (`bus-network`): whatever escapes the loop is
logged, counted and audited, and the loop starts again on a fresh client, so the connection can never
die silently while `/health` says it is up. A second thread drains the ledger's outbox and coalesces
telemetry. Nothing here is the source of truth: a message the broker
never took is still in the outbox and goes out again after a reconnection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import BrokerConfig
from ..ledger import Ledger
from ..payload import decode_json
from . import discovery, nodes
from . import topics as t
from .tokens import CommandRefused, verify
from .version import first_version

log = logging.getLogger("afn_agent.bus")
SESSION_EXPIRY_S = 7 * 86400  # the broker keeps our subscriptions and QoS 1 messages for a week
CONSUMER_BACK_EVERY_S = 2.0  # a booking consumer's "online" sends what is unacknowledged, this often at most
PUMP_EVERY_S = 0.5
BATCH = 200
MAX_PACKET = (1 << 20) + 65536  # the largest payload we read (payload.MAX_BYTES) plus topic and header

StatusFn = Callable[[str], dict[str, Any]]
CommandFn = Callable[[dict[str, Any]], tuple[str, str]]


class Bus:
    """One MQTT connection per agent; thread-safe `publish_*` methods that never block on the network."""

    def __init__(
        self,
        config: BrokerConfig,
        site: str,
        agent_id: str,
        ledger: Ledger,
        machines: list[str],
        status: StatusFn,
        on_command: CommandFn | None = None,
    ) -> None:
        self.config = config
        self.topics = t.Topics(config.topic_prefix, site)
        self.agent_id = agent_id
        self.ledger = ledger
        self.machine_ids = list(machines)
        self.devices: dict[str, Callable[[str, bytes], None]] = {}  # topic filter -> handler (power plugs)
        self.status = status
        self.on_command = on_command
        self.connected = threading.Event()
        self.refused: str | None = None  # the broker's reason when its last CONNACK refused the agent
        self.malformed = 0  # messages refused unread (too large, too deep, not JSON, wrong shape)
        self.protocol = first_version(config)
        # a clean session: nothing kept by the broker between connections (its replication may fail a
        # clustered broker's node switch), nothing queued for us, so subscriptions need no more than QoS 0
        self.clean = config.session == "clean"
        self.qos = 0 if self.clean else 1
        self.nodes = nodes.of(config)  # the broker's addresses: a clustered broker's nodes, in order
        self.discovery: discovery.Discovery | None = None  # Home Assistant's configs (home_assistant = true)
        self.on_directory: Callable[[str, bytes], None] | None = None
        self.published = 0
        self._consumer_back = 0.0  # when a consumer's "online" last sent the outbox again
        self._status_sent = 0.0  # when every status last went out (status_every_s)
        self._status_due: set[str] = set()  # machines whose status the pump sends at its next turn (_lock)
        self.network_restarts = 0  # times something escaped paho's loop and the client was rebuilt
        self._network: threading.Thread | None = None
        self._inflight: dict[
            int, tuple[mqtt.MQTTMessageInfo, bool]
        ] = {}  # outbox seq -> (paho's handle, final)
        self._lock = threading.Lock()
        self._watch_lock = threading.Lock()  # devices and the session's subscriptions change together
        self._session_up = False  # subscriptions made on this connection (under _watch_lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._telemetry: dict[str, dict[str, Any]] = {}
        self._telemetry_sent: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.client = self._make_client()

    # ---- connection -------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = self.config
        client_id = f"afn-{self.topics.site}-{self.agent_id}"
        v5 = self.protocol == mqtt.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=self.protocol,
            clean_session=None if v5 else self.clean,
        )
        if c.username:
            client.username_pw_set(c.username, c.password)
        if c.tls:
            client.tls_set(
                ca_certs=c.ca_file, certfile=c.cert_file, keyfile=c.key_file, cert_reqs=ssl.CERT_REQUIRED
            )
        client.will_set(self.topics.agent(self.agent_id), self._availability("offline"), qos=1, retain=True)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        self.nodes.attach(client, self._on_disconnect)
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> Bus:
        self._connect()
        self._network = threading.Thread(target=self._network_loop, name="bus-network", daemon=True)
        self._network.start()
        self._thread = threading.Thread(target=self._pump, name="bus-pump", daemon=True)
        self._thread.start()
        return self

    @property
    def network_alive(self) -> bool:
        return self._network is not None and self._network.is_alive()

    @property
    def up(self) -> bool:
        """Connected, and the thread that reads from the broker is running: what /health reports."""
        return self.connected.is_set() and self.network_alive

    def _network_loop(self) -> None:
        """paho's loop, for as long as the bus runs. Nothing that escapes it (a handler's bug, a library
        fault) ends it: the client is rebuilt and connects again; the outbox resends what was unanswered."""
        while not self._stop.is_set():
            client = self.client
            try:
                client.loop_forever(retry_first_connection=True)
            except Exception as exc:
                self.network_restarts += 1
                log.exception("MQTT network loop failed; reconnecting with a new client")
                with contextlib.suppress(Exception):
                    self.ledger.audit("mqtt", "network", "restarted", None, None,
                                      detail=repr(exc)[:200], code="network-loop-failed")  # fmt: skip
            self.connected.clear()
            with self._watch_lock:
                self._session_up = False
            if self._stop.is_set():
                return
            if self.client is client:  # not already replaced (the MQTT 5 -> 3.1.1 fallback replaces it)
                with contextlib.suppress(Exception):
                    client.disconnect()
                    if (sock := client.socket()) is not None:
                        sock.close()  # its fd, now: the old client is dropped
                self.client = self._make_client()
                self._connect()
                self._stop.wait(1.0)

    def _connect(self) -> None:
        (host, port), keepalive = self.nodes.current, self.config.keepalive_s
        if self.protocol != mqtt.MQTTv5:
            self.client.connect_async(host, port, keepalive)
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if self.clean else SESSION_EXPIRY_S
        props.MaximumPacketSize = MAX_PACKET  # the broker drops anything larger meant for us
        self.client.connect_async(host, port, keepalive, clean_start=self.clean, properties=props)

    def stop(self) -> None:
        """Say offline (retained), then disconnect cleanly: the last will is for crashes only."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
        if self.connected.is_set():
            self._send_statuses()  # a change just before the stop, which the pump did not reach
            info = self.client.publish(
                self.topics.agent(self.agent_id), self._availability("offline"), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2)
        self.client.disconnect()
        if self._network is not None:
            self._network.join(5)

    def _availability(self, state: str) -> str:
        return json.dumps(
            {"agent": self.agent_id, "state": state, "machines": self.machine_ids, "t": time.time()}
        )

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            fallback = self.config.protocol == "auto" and self.protocol == mqtt.MQTTv5
            if fallback and "protocol" in str(reason_code).lower():
                log.warning("broker does not speak MQTT 5; falling back to 3.1.1")
                self.protocol = mqtt.MQTTv311
                threading.Thread(target=self._restart_client, daemon=True).start()
            else:
                self.refused = str(reason_code)
            return
        self.refused = None
        q = self.qos
        subs = [
            (self.topics.machine(m, leaf), q) for m in self.machine_ids for leaf in (t.COMMAND, t.USAGE_ACK)
        ]
        subs += [(self.topics.directory(), q), (self.topics.directory_delta(), q)]
        subs.append((self.topics.consumers(), q))  # a booking consumer back: the outbox goes out again
        if self.config.home_assistant_buttons:
            subs += [(self.topics.machine(m, t.HA_BUTTON), q) for m in self.machine_ids]
        with self._watch_lock:  # a plug watched during this connect is subscribed here or by watch()
            subs += [(pattern, q) for pattern in self.devices]
            client.subscribe(subs)
            self._session_up = True
        client.publish(self.topics.agent(self.agent_id), self._availability("online"), qos=1, retain=True)
        self._statuses_due(self.machine_ids)
        self._status_sent = time.monotonic()
        if self.discovery is not None:
            for topic, payload in self.discovery.all():
                client.publish(topic, payload, qos=1, retain=True)
        self.ledger.outbox_retry_now()
        with self._lock:
            self._inflight.clear()  # unanswered before the drop: the outbox sends them again
        self.connected.set()
        self._wake.set()
        self.nodes.connected_to = self.nodes.current
        log.info("connected to %s:%s (MQTT %s)", *self.nodes.current, self._version())

    def _version(self) -> str:
        return "5" if self.protocol == mqtt.MQTTv5 else "3.1.1"

    def _restart_client(self) -> None:
        """Swap in a client of the new protocol; the network thread moves on to it."""
        old = self.client
        # the old client's goodbye is not a lost connection: it must neither clear the new one's flag nor
        # move the bus to the broker's next node
        old.on_disconnect = old.on_connect_fail = None
        self.client = self._make_client()
        self._connect()
        old.disconnect()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        with self._watch_lock:
            self._session_up = False
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); retrying", reason_code)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        """A PUBACK: let the pump record it. Nothing here may take a lock: paho holds its own while it
        calls us, and publish() takes the same one (a deadlock found by bench/mqtt.py)."""
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Runs in paho's network thread: nothing may escape from here, or that thread dies silently
        and the agent stops hearing commands and acks while still saying it is connected."""
        try:
            self._dispatch(msg)
        except Exception as exc:
            self.malformed += 1
            log.warning("message on %s refused: %s", msg.topic, exc)
            with contextlib.suppress(Exception):
                self.ledger.audit(
                    "mqtt", "message", "refused", None, None, detail=str(exc)[:200], code="malformed"
                )

    def _dispatch(self, msg: mqtt.MQTTMessage) -> None:
        for pattern, handler in list(self.devices.items()):
            if mqtt.topic_matches_sub(pattern, msg.topic):
                handler(msg.topic, bytes(msg.payload))
                return
        if msg.topic in (self.topics.directory(), self.topics.directory_delta()):
            if self.on_directory is not None:
                self.on_directory(
                    "snapshot" if msg.topic == self.topics.directory() else "delta", bytes(msg.payload)
                )
            return
        if mqtt.topic_matches_sub(self.topics.consumers(), msg.topic):
            self._on_consumer(bytes(msg.payload))
            return
        where = self.topics.parse(msg.topic)
        if where is None:
            return
        machine, leaf = where
        if leaf == t.USAGE_ACK:
            self._on_ack(bytes(msg.payload))
        elif leaf == t.COMMAND:
            self._on_command_message(machine, bytes(msg.payload))
        elif leaf == t.HA_BUTTON and self.config.home_assistant_buttons and machine in self.machine_ids:
            self._on_button(machine, bytes(msg.payload))

    def _on_ack(self, payload: bytes) -> None:
        try:
            ids = decode_json(payload, max_bytes=65536)["record_id"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            log.warning("ignoring a malformed usage acknowledgement: %r", payload[:200])
            return
        for record_id in ids if isinstance(ids, list) else [ids]:
            if isinstance(record_id, str):
                self.ledger.acknowledge(record_id)

    def _on_consumer(self, payload: bytes) -> None:
        """A booking consumer came (back) online: what it has not acknowledged goes out now, not at the
        outbox's next backoff step (minutes, after a long outage). On a clean session nothing was queued
        for it meanwhile; at most every CONSUMER_BACK_EVERY_S, whoever repeats the message."""
        data = decode_json(payload, max_bytes=4096) if payload else None
        now = time.monotonic()
        if not isinstance(data, dict) or data.get("state") != "online":
            return
        if now - self._consumer_back >= CONSUMER_BACK_EVERY_S:
            self._consumer_back = now
            self.ledger.outbox_retry_now()
            self._wake.set()

    def _on_command_message(self, machine: str, payload: bytes) -> None:
        """Verify, run, and report a manager command; every one is audited, refused ones too."""
        secret = self.config.command_secret
        actor, command = "unknown", "?"
        try:
            if not secret:
                raise CommandRefused("commands_disabled", "this agent has no command_secret configured")
            cmd = verify(secret, payload, machine)
            actor, command = cmd["actor"], cmd["command"]
            if not self.ledger.use_nonce(cmd["nonce"], cmd["expires"]):
                raise CommandRefused("replayed", "nonce already used")
            result, detail = self.on_command(cmd) if self.on_command else ("refused", "no handler")
            code = "" if result == "done" else detail
        except CommandRefused as exc:
            result, detail, code = "refused", str(exc), exc.code
        self._report(machine, f"command:{command}", command, actor, result, detail, code)

    def _on_button(self, machine: str, payload: bytes) -> None:
        """A Home Assistant button: trusted because only HA's broker user may write the topic (ACL);
        run as a manager's command would be, refused in the wrong state, audited either way."""
        command = payload.decode("ascii", "replace").strip()[:16]
        if command not in discovery.BUTTONS:
            result, detail, code = "refused", f"unknown button {command!r}", "unknown_command"
        elif self.on_command is None:
            result, detail, code = "refused", "no handler", "no_handler"
        else:
            cmd = {"machine": machine, "actor": "homeassistant", "command": command, "args": {}}
            result, detail = self.on_command(cmd)
            code = "" if result == "done" else detail
        self._report(machine, f"button:{command}", command, "homeassistant", result, detail, code)

    def _report(self, machine: str, action: str, command: str, actor: str, result: str, detail: str,
                code: str) -> None:  # fmt: skip
        """A command's outcome, signed or pressed: audited, and said on the events topic."""
        self.ledger.audit(actor, action, result, machine, None, detail=detail, code=code)
        self.ledger.outbox_add(
            "event",
            machine,
            {"type": "command", "machine": machine, "command": command, "actor": actor, "result": result,
             "code": code, "detail": detail, "t": time.time()},
        )  # fmt: skip
        self._wake.set()

    # ---- devices on the lab's broker (Tasmota plugs): the agent's one connection carries them ---------
    def watch(self, pattern: str, handler: Callable[[str, bytes], None]) -> None:
        """Messages on `pattern` go to `handler` (paho's thread; it must not raise for long)."""
        with self._watch_lock:
            self.devices[pattern] = handler
            if self._session_up:
                self.client.subscribe(pattern, qos=self.qos)

    def publish_device(self, topic: str, payload: str) -> None:
        """A command to a device: not through the outbox (a stale switch command is worse than none)."""
        self.client.publish(topic, payload, qos=1)

    # ---- publishing -------------------------------------------------------------------------------
    def wake(self) -> None:
        """The outbox has something new: send it now rather than at the next poll."""
        self._wake.set()

    def status_changed(self, machine_id: str) -> None:
        """Sent by the bus's pump, which reads the status when it sends: a change while the connection
        comes up is not lost (it was, before `connected` was set), nor sent older than one after it."""
        self._statuses_due([machine_id])

    def _statuses_due(self, machine_ids: list[str]) -> None:
        with self._lock:
            self._status_due.update(machine_ids)
        self._wake.set()

    def _send_statuses(self) -> None:
        with self._lock:
            due, self._status_due = self._status_due, set()
        for m in sorted(due):
            self._publish_status(m)

    def telemetry(self, machine_id: str, data: dict[str, Any]) -> None:
        """Keep the latest; the pump sends at most `telemetry_hz` per machine (coalesced)."""
        with self._lock:
            self._telemetry[machine_id] = data
        self._wake.set()

    def picture(self, machine_id: str, data: dict[str, Any]) -> None:
        """The latest camera thumbnail, retained; not through the outbox (a newer one replaces it)."""
        if self.connected.is_set():
            payload = json.dumps(data, sort_keys=True)
            self.client.publish(self.topics.machine(machine_id, t.PICTURE), payload, qos=1, retain=True)

    def _publish_status(self, machine_id: str) -> None:
        payload = json.dumps(self.status(machine_id), sort_keys=True)
        self.client.publish(self.topics.machine(machine_id, t.STATUS), payload, qos=1, retain=True)
        self.published += 1

    def _pump(self) -> None:
        wait = PUMP_EVERY_S
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            wait = PUMP_EVERY_S
            if not self.connected.is_set():
                continue
            try:
                self._record_pubacks()
                self._refresh_status()
                self._send_statuses()
                self._drain_outbox()
                wait = self._send_telemetry()
            except Exception:  # the pump must outlive any one bad row or a closing ledger
                log.exception("bus pump")

    def _record_pubacks(self) -> None:
        """Outbox rows the broker has taken: events are done, usage waits for its acknowledgement."""
        with self._lock:
            done = [(seq, final) for seq, (info, final) in self._inflight.items() if info.is_published()]
            for seq, _ in done:
                del self._inflight[seq]
        for seq, final in done:
            self.ledger.outbox_published(seq, final=final)

    def _drain_outbox(self) -> None:
        for row in self.ledger.outbox_due(limit=BATCH):
            with self._lock:
                if row["seq"] in self._inflight:
                    continue
            leaf = t.KINDS_TO_LEAF.get(row["kind"], t.EVENTS)
            info = self.client.publish(self.topics.machine(row["machine_id"], leaf), row["payload"], qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # connection gone; the reconnect sends everything again
            with self._lock:
                self._inflight[row["seq"]] = (info, row["kind"] != "usage")
            self.published += 1
            self.ledger.outbox_tried(row["seq"])

    def _refresh_status(self) -> None:
        """`status_every_s`: the retained status and `online` again, as at a reconnection. A clustered
        broker's retained copy can go stale when a node dies mid-update (NATS 2.9), and a dashboard
        between nodes misses changes: either is right again within the period."""
        every, now = self.config.status_every_s, time.monotonic()
        if not every or now - self._status_sent < every:
            return
        self._status_sent = now
        online = self._availability("online")
        self.client.publish(self.topics.agent(self.agent_id), online, qos=1, retain=True)
        self._statuses_due(self.machine_ids)

    def _send_telemetry(self) -> float:
        """Send what is due; returns how long until the next machine's telemetry is."""
        period = 1.0 / self.config.telemetry_hz
        now = time.monotonic()
        with self._lock:
            due = {
                m: d for m, d in self._telemetry.items() if now - self._telemetry_sent.get(m, -1e9) >= period
            }
            for m in due:
                del self._telemetry[m]
                self._telemetry_sent[m] = now
            waiting = [period - (now - self._telemetry_sent[m]) for m in self._telemetry]
        for machine_id, data in due.items():
            if self.discovery is not None:  # a heater seen for the first time becomes two entities first
                for topic, payload in self.discovery.new_heaters(machine_id, data.get("temperatures") or {}):
                    self.client.publish(topic, payload, qos=1, retain=True)
            self.client.publish(self.topics.machine(machine_id, t.TELEMETRY), json.dumps(data), qos=0)
            self.published += 1
        return max(min([PUMP_EVERY_S, *waiting]), 0.005)
