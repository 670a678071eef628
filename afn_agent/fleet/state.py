"""What the fleet dashboard knows: the latest status of every machine, agents' availability, today's
usage per machine and a feed of recent events — all rebuilt from the broker (retained status first)."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from ..bus.topics import Topics
from ..config_model import ID
from ..ledger.appkeys import REQUEST_S
from ..payload import decode_json
from .history import History, bucket_of

EVENT_FEED = 200
KEY_REQUESTS = 100  # shown at once; the agents hold at most 20 each
HEATERS = 6  # per machine, at most (a payload naming more is cut)
TEMP_EVERY_S = 5.0  # one point of a machine's temperature curve per this many seconds
TEMP_POINTS = 720  # an hour of curve per machine
PICTURE_BYTES = 200_000  # a thumbnail is ~20 KB; anything larger is not one
NAMES = 5000  # member names remembered from statuses (for the event sentences)


class FleetState:
    def __init__(self, topics: Topics, history: History | None = None, labs: tuple[str, ...] = ()) -> None:
        self.topics = topics
        self.home = topics.site  # its machines keep their bare ids; another lab's are `<lab>:<id>`
        self.heads = {site: Topics(topics.prefix, site) for site in (topics.site, *labs)}
        self.history = history  # usage records and jobs' events, kept on disk for the history page
        self.machines: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.usage_today: dict[str, dict[str, float]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_FEED)
        self.key_requests: dict[str, dict[str, Any]] = {}  # applications waiting for a manager's decision
        self.temperatures: dict[str, dict[str, list[float]]] = {}  # machine -> heater -> [actual, target]
        self.curves: dict[str, deque[tuple[float, dict[str, float]]]] = {}  # machine -> (t, heater -> °C)
        self.names: dict[str, str] = {}  # member id -> name, as the agents' statuses said
        self.pictures: dict[str, tuple[bytes, dict[str, Any]]] = {}  # machine -> latest thumbnail, facts
        self.version = 0  # bumped on every change; the SSE stream sends what changed since
        self.changes: deque[tuple[int, str, Any]] = deque(maxlen=5000)
        self._seen_records: set[str] = set()
        self._day = datetime.now().date()
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Fold one MQTT message into the state; malformed payloads are dropped, never raised."""
        try:
            data = decode_json(payload) if payload else None
        except ValueError:  # Malformed: too large, too deep, not JSON
            return
        found = self._where(topic)
        if found is None or not isinstance(data, dict):
            return
        site, name, leaf = found
        if leaf == "_agent":
            listed = data.get("machines")
            ids = listed[:1000] if isinstance(listed, list) else []
            keys = [self.key_of(site, m) for m in ids if isinstance(m, str)]
            self._change("agent", self.key_of(site, name), {**data, "machines": keys}, self.agents)
            self._agent_buckets(site, data)
            return
        machine = self.key_of(site, name)
        if leaf == "status":
            self._learn_name(data.get("session"))
            self._change("machine", machine, {**data, "key": machine, "lab": site}, self.machines)
            if self.history is not None:
                cls = data.get("class") if isinstance(data.get("class"), str) else None
                self.history.state(site, name, cls, bucket_of(data), time.time())
        elif leaf == "telemetry":
            self._telemetry(machine, data.get("temperatures"), time.time())
        elif leaf == "picture":
            self._picture(site, machine, name, data)
        elif leaf == "events":
            if self.history is not None:
                self.history.event(site, name, data)
            with self.cond:
                self._key_request(machine, data)
                said = {**data, "machine": name, "key": machine, "lab": site}
                self.events.appendleft(said)
                self._bump("event", said)
        elif leaf == "usage":
            if self.history is not None:
                self.history.keep(site, data)
            self._usage(machine, data)

    def _change(self, kind: str, key: str, data: dict[str, Any], table: dict[str, dict[str, Any]]) -> None:
        with self.cond:
            if table.get(key) == data:
                return
            table[key] = data
            self._bump(kind, {"id": key, **data})

    def key_of(self, site: str, machine: str) -> str:
        """How the dashboard names a machine: its id in the home lab, `<lab>:<id>` in another."""
        return machine if site == self.home else f"{site}:{machine}"

    def locate(self, key: str) -> tuple[str, str]:
        """(lab, machine id) of a dashboard key."""
        site, sep, machine = key.partition(":")
        return (site, machine) if sep else (self.home, key)

    def _where(self, topic: str) -> tuple[str, str, str] | None:
        """(lab, machine id or agent id, leaf; `_agent` for an agent's availability) of a topic."""
        for site, head in self.heads.items():
            if topic.startswith(head.agent("")):
                found = site, topic.rsplit("/", 1)[-1], "_agent"
            elif (where := head.parse(topic)) is not None:
                found = site, where[0], where[1]
            else:
                continue
            # only what an agent can be named (config ID): `lab:machine` from a topic would pose as
            # another lab's machine
            return found if ID.match(found[1]) else None
        return None

    def _agent_buckets(self, site: str, availability: dict[str, Any]) -> None:
        """An agent gone (its last will): its machines' time is down until it is back."""
        machines = availability.get("machines")
        if self.history is None or not isinstance(machines, list):
            return
        online, now = availability.get("state") == "online", time.time()
        for machine in machines[:1000]:
            if isinstance(machine, str) and (key := self.key_of(site, machine)) in self.machines:
                status = self.machines[key]
                bucket = bucket_of(status, online)
                self.history.state(site, machine, status.get("class"), bucket, now)

    def _learn_name(self, session: Any) -> None:
        if not isinstance(session, dict) or not isinstance(name := session.get("member_name"), str):
            return
        member = session.get("member_id")
        room = member in self.names or len(self.names) < NAMES
        if isinstance(member, str) and len(member) <= 80 and room:
            self.names[member] = name[:80]

    def _telemetry(self, machine: str, temperatures: Any, now: float) -> None:
        """A machine's heaters from its telemetry: the latest value, a point of its curve every few
        seconds, and a change for the pages when a value moved by a degree (not at every report)."""
        if not isinstance(temperatures, dict) or machine not in self.machines:
            return
        temps: dict[str, list[float]] = {}
        for heater, pair in list(temperatures.items())[:HEATERS]:
            if (isinstance(heater, str) and len(heater) <= 16 and isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(v, int | float) and -300 < v < 2000 for v in pair)):  # fmt: skip
                temps[heater] = [round(float(pair[0]), 1), round(float(pair[1]), 1)]
        if not temps:
            return
        with self.cond:
            before = self.temperatures.get(machine, {})
            self.temperatures[machine] = temps
            curve = self.curves.setdefault(machine, deque(maxlen=TEMP_POINTS))
            if not curve or now - curve[-1][0] >= TEMP_EVERY_S:
                curve.append((round(now, 1), {h: v[0] for h, v in temps.items()}))
            if any(abs(v[0] - before.get(h, [-999.0])[0]) >= 1 or v[1] != before.get(h, [0, None])[1]
                   for h, v in temps.items()):  # fmt: skip
                self._bump("temperatures", {"id": machine, "temperatures": temps})

    def _picture(self, site: str, machine: str, name: str, data: dict[str, Any]) -> None:
        """A machine's latest camera thumbnail (a JPEG, at most PICTURE_BYTES), kept for the tile and, when
        it belongs to a job, in the history."""
        try:
            jpeg = base64.b64decode(str(data.get("jpeg", ""))[: PICTURE_BYTES * 2], validate=True)
        except ValueError:
            return
        if machine not in self.machines or not jpeg.startswith(b"\xff\xd8") or len(jpeg) > PICTURE_BYTES:
            return
        named = ("t", "moment", "job_id", "sha256")
        facts = {k: v for k in named if isinstance(v := data.get(k), str | float)}
        facts = {k: v[:80] if isinstance(v, str) else v for k, v in facts.items()}  # facts, not payloads
        with self.cond:
            self.pictures[machine] = (jpeg, facts)
            self._bump("picture", {"id": machine, **facts})
        if self.history is not None and isinstance(facts.get("job_id"), str):
            self.history.picture(site, name, facts, jpeg)

    def picture(self, machine: str) -> tuple[bytes, dict[str, Any]] | None:
        with self.cond:
            return self.pictures.get(machine)

    def curve(self, machine: str) -> list[tuple[float, dict[str, float]]]:
        """The machine's temperature curve (the last hour), oldest first."""
        with self.cond:
            return list(self.curves.get(machine, ()))

    def _key_request(self, machine: str, data: dict[str, Any]) -> None:
        """Applications waiting for a key (Home Assistant's set-up), until decided or expired."""
        request = data.get("request")
        if not isinstance(request, str) or len(request) > 40:
            return
        if data.get("type") == "appkey_requested" and len(self.key_requests) < KEY_REQUESTS:
            self.key_requests[request] = {
                "request": request, "machine": machine, "app": str(data.get("app"))[:80],
                "user": str(data.get("user") or "")[:80], "t": data.get("t"),
            }  # fmt: skip
        elif data.get("type") == "appkey_decided":
            self.key_requests.pop(request, None)

    def _usage(self, machine: str, record: dict[str, Any]) -> None:
        rid = record.get("record_id")
        if not isinstance(rid, str) or rid in self._seen_records:
            return  # a re-sent record counts once
        with self.cond:
            self._roll_day()
            self._seen_records.add(rid)
            end = record.get("end", "")
            if not end.startswith(self._day.isoformat()):
                return
            u = self.usage_today.setdefault(machine, {"jobs": 0, "busy_s": 0.0, "price": 0.0})
            t = record.get("time_s", {})
            u["jobs"] += 1
            u["busy_s"] += float(t.get("total_s", 0) or 0)
            with contextlib.suppress(ValueError, TypeError):
                u["price"] += float(record.get("price", 0))
            self._bump("usage", {"id": machine, **u})

    def _roll_day(self) -> None:
        today = datetime.now().date()
        if today != self._day:
            self._day, self.usage_today = today, {}

    def _bump(self, kind: str, data: Any) -> None:
        self.version += 1
        self.changes.append((self.version, kind, data))
        self.cond.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self.cond:
            self._roll_day()
            midnight = datetime.combine(self._day, datetime.min.time()).timestamp()
            elapsed = max(time.time() - midnight, 1.0)
            util = {m: round(u["busy_s"] / elapsed, 4) for m, u in self.usage_today.items()}
            return {
                "version": self.version,
                "machines": dict(self.machines),
                "temperatures": dict(self.temperatures),
                "agents": dict(self.agents),
                "usage_today": {m: {**u, "utilisation": util[m]} for m, u in self.usage_today.items()},
                "events": list(self.events)[:50],
                "key_requests": [r for r in self.key_requests.values()
                                 if isinstance(r["t"], int | float) and time.time() - r["t"] < REQUEST_S],
            }

    def changes_since(self, version: int) -> tuple[int, list[tuple[str, Any]]]:
        with self.cond:
            if self.changes and version < self.changes[0][0] - 1:
                return self.version, [("reload", None)]  # too far behind: start over
            return self.version, [(k, d) for v, k, d in self.changes if v > version]

    def wait(self, version: int, timeout: float) -> None:
        with self.cond:
            if self.version == version:
                self.cond.wait(timeout)
