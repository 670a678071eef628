"""`afn-agent demo`: a whole fab lab on one computer, no hardware.

Two Marlin printers, a GRBL mill and a GRBL laser (simulated, on pseudo-terminals), two agents with
badge readers, kiosks and APIs, a Mosquitto broker, the fleet dashboard and a booking system that
imports the members and receives every usage record — then a scripted afternoon at the lab.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .access.directory import badge_hash
from .agent import Agent
from .config import BrokerConfig, load_config
from .fleet.service import Fleet, FleetConfig
from .intake import submit
from .sim.jobs import circle_gcode
from .sim.run import SimProcess

SITE = "demolab"
BADGE_SECRET = "demo-lab-badge-secret-0123456789"
COMMAND_SECRET = "demo-lab-command-secret-0123456789"
DEMO_MANAGER_KEY = "demo-manager-key-0123456789"  # the demo agents' manager key: `afn-agent badge` with it
MEMBERS: dict[
    str, dict[str, Any]
] = {  # badge UID -> member (the booking system's view; the agents only ever see keyed hashes)
    "0A00A1A1A1": {
        "id": "ana",
        "name": "Ana Moreau",
        "trainings": [{"class": "fdm-printer"}, {"class": "laser"}],
    },
    "0A00B2B2B2": {"id": "bob", "name": "Bob Martin", "trainings": []},
    "0A00C3C3C3": {
        "id": "eve",
        "name": "Eve Laurent",
        "trainings": [{"class": "cnc-mill", "supervised": True}],
    },
    "0A00D4D4D4": {
        "id": "tom",
        "name": "Tom Petit",
        "roles": ["member", "trainer"],
        "trainings": [{"class": "cnc-mill"}, {"class": "fdm-printer"}, {"class": "laser"}],
    },
    "0A00E5E5E5": {
        "id": "lea",
        "name": "Léa Roux",
        "trainings": [{"class": "laser"}, {"class": "fdm-printer"}],
    },
}
UID = {m["id"]: uid for uid, m in MEMBERS.items()}
TARIFFS = """
[tariffs.printer]
currency = "EUR"
per_active_minute = 0.05
per_heating_minute = 0.01
per_gram = 0.04
minimum = 0.50
rounding = 0.05
policy = { cancelled = "done_part", fault = "none", offline = "done_part", admin = "none" }

[tariffs.mill]
currency = "EUR"
per_active_minute = 0.20
per_spindle_minute = 0.10
minimum = 1.00
rounding = 0.10

[tariffs.laser]
currency = "EUR"
per_beam_minute = 0.80
per_active_minute = 0.05
minimum = 0.50
rounding = 0.05
"""


@dataclass
class Booking:
    """The lab's booking system: publishes the directory, stores and acknowledges usage records."""

    port: int
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: list[bytes] = field(default_factory=list)

    def start(self) -> Booking:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-booking")
        c.on_message = self._on_message
        c.on_connect = lambda client, *a: client.subscribe(
            [(f"afn/v1/{SITE}/+/usage", 1), (f"afn/v1/{SITE}/#", 0)]
        )
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        self.client = c
        members = [{**m, "badges": [{"hash": badge_hash(BADGE_SECRET, uid)}]} for uid, m in MEMBERS.items()]
        snapshot = {"version": 1, "members": members, "bookings": []}
        c.publish(
            f"afn/v1/{SITE}/_directory/snapshot", json.dumps(snapshot), qos=1, retain=True
        ).wait_for_publish(5)
        return self

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.traffic.append(msg.topic.encode() + b" " + msg.payload)
        if msg.topic.endswith("/usage"):
            record = json.loads(msg.payload)
            self.records[record["record_id"]] = record  # stored by id: a repeat changes nothing
            client.publish(msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path) -> tuple[subprocess.Popen[bytes] | None, int]:
    """An open Mosquitto on a free loopback port (the demo, the benchmarks); None when not installed."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if exe is None:
        return None, 0
    port = _free_port()
    conf = work / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    return None, 0


class Lab:
    def __init__(self, fast: bool, out: Callable[[str], None] = print) -> None:
        self.fast = fast
        self.say = out
        self.work = Path(tempfile.mkdtemp(prefix="afn-demo-"))
        self.speed = 25 if fast else 6
        self.sims: dict[str, SimProcess] = {}
        self.agents: list[Agent] = []
        self.broker: subprocess.Popen[bytes] | None = None
        self.booking: Booking | None = None
        self.fleet: Fleet | None = None

    # ---- set-up ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.broker, port = start_broker(self.work)
        if self.broker is None:
            self.say("mosquitto is not installed: running without MQTT, booking system and fleet dashboard")
        sims = {
            "printer-1": ("marlin", {}),
            "printer-2": ("marlin", {"thermal_runaway_at": 900}),
            "mill-1": ("grbl", {}),
            "laser-1": ("grbl", {}),
        }
        for name, (kind, opts) in sims.items():
            sim = SimProcess(kind, self.work / name, speed=self.speed, baud=250000, move_ms=1.0, **opts)
            sim.dir.mkdir()
            self.sims[name] = sim.start()
        if self.broker is not None:
            self.booking = Booking(port).start()
        self.agents.append(
            self._agent(
                "pi-printers",
                [
                    self._machine("printer-1", "fdm-printer", "marlin2", "printer"),
                    self._machine("printer-2", "fdm-printer", "marlin2", "printer"),
                ],
                port,
            )
        )
        self.agents.append(
            self._agent(
                "pi-shop",
                [
                    self._machine("mill-1", "cnc-mill", "grbl-1.1", "mill"),
                    self._machine("laser-1", "laser", "fluidnc", "laser"),
                ],
                port,
            )
        )
        if self.broker is not None:
            cfg = BrokerConfig(host="127.0.0.1", port=port)
            managers = {"manager": hashlib.sha256(b"demo").hexdigest()}
            self.fleet = Fleet(
                FleetConfig(self.work / "fleet.toml", SITE, "127.0.0.1", 0, COMMAND_SECRET, managers, cfg,
                            data_dir=self.work / "fleet")  # its history and charts
            ).start()
        for agent in self.agents:
            for m in agent.machines.values():
                if not m.wait_ready(20):
                    raise RuntimeError(f"{m.name} did not come up ({m.state}: {m.last_error})")
            if agent.access is not None and self.broker is None:
                snapshot = {
                    "version": 1,
                    "bookings": [],
                    "members": [{**m, "badges": [uid]} for uid, m in MEMBERS.items()],
                }
                agent.access.directory.apply_snapshot(snapshot, "demo")
        deadline = time.monotonic() + 10
        while (
            any(a.access and a.access.directory.meta() is None for a in self.agents)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)

    def _machine(self, mid: str, cls: str, profile: str, tariff: str) -> str:
        return (
            f'[[machines]]\nid = "{mid}"\nclass = "{cls}"\nprofile = "{profile}"\nport = "{self.sims[mid].link}"\n'
            f'baud = 250000\ntariff = "{tariff}"\nreader = "sim"\nmaterial = "PLA"\n'
        )

    def _agent(self, agent_id: str, machines: list[str], broker_port: int) -> Agent:
        text = (
            f'[agent]\nsite = "{SITE}"\nid = "{agent_id}"\ndata_dir = "{self.work / agent_id}"\ncheckpoint_s = 1.0\n'
            + TARIFFS
            + "\n"
            + "\n".join(machines)
            + f'\n[access]\nbadge_secret = "{BADGE_SECRET}"\ndebounce_s = 0.3\n'
            + '\n[api]\nhost = "127.0.0.1"\nport = 0\n'
        )
        if self.broker is not None:
            text += (
                f'\n[broker]\nhost = "127.0.0.1"\nport = {broker_port}\ncommand_secret = "{COMMAND_SECRET}"\n'
            )
        manager = hashlib.sha256(DEMO_MANAGER_KEY.encode()).hexdigest()
        text += f'\n[[api.keys]]\nname = "demo-manager"\nrole = "manager"\nsha256 = "{manager}"\n'
        path = self.work / f"{agent_id}.toml"
        path.write_text(text)
        return Agent(load_config(path)).start()

    def agent_of(self, machine: str) -> Agent:
        return next(a for a in self.agents if machine in a.machines)

    # ---- the afternoon --------------------------------------------------------------------------------
    def badge(self, machine: str, member: str) -> dict[str, Any]:
        agent = self.agent_of(machine)
        decision = agent.control.badge(machine, UID[member]).public()
        self.say(
            f"  {member:>4} badges at {machine}: {decision['code']}"
            + (f" ({decision['detail']})" if decision["detail"] else "")
        )
        time.sleep(0.4)  # past the reader's debounce before the next card
        return decision

    def job(self, machine: str, member: str | None, name: str, segments: int, **kw: Any) -> str:
        agent = self.agent_of(machine)
        flavour = {"mill-1": "grbl", "laser-1": "laser"}.get(machine, "marlin")
        seg = min(0.5, 150 / segments)
        path = circle_gcode(
            self.work / name,
            segments,
            seg,
            flavour=flavour,
            centre=(110, 110) if flavour == "marlin" else (0, 0),
            **kw,
        )
        job_id, quote = submit(
            agent.config, agent.ledger, machine, path, "upload", held=True, member_id=member
        )
        q = quote["quote"]
        self.say(
            f"  {name} uploaded for {machine}: about {quote['time_s'] / 60:.1f} min, "
            f"{quote['material_g']:.1f} g, quote {q['price']} {q['currency']}"
        )
        return job_id

    def wait(self, machine: str, timeout: float = 300) -> dict[str, Any]:
        agent = self.agent_of(machine)
        time.sleep(0.5)
        if not agent.wait_idle(machine, timeout):
            raise RuntimeError(f"{machine} did not finish its job")
        return agent.ledger.usage_after(0, 1000)[-1][1]

    def scenario(self) -> None:
        n = 1 if self.fast else 6
        self.say("\n1. Ana, trained on printers, badges in at printer-1 and prints")
        self.job("printer-1", "ana", "keychain.gcode", 600 * n, heat=(205, 60))
        self.badge("printer-1", "ana")
        self._summary_line(self.wait("printer-1"))
        self.badge("printer-1", "ana")  # badge out
        self.say("\n2. Bob is not trained on printers: refused")
        self.badge("printer-2", "bob")
        self.say("\n3. Eve's first use of the mill is supervised: Tom, a trainer, badges after her")
        self.job("mill-1", "eve", "bracket.nc", 800 * n)
        self.badge("mill-1", "eve")
        self.badge("mill-1", "tom")
        self._summary_line(self.wait("mill-1"))
        self.say("\n4. Léa cuts on the laser, billed on beam-on time")
        self.job("laser-1", "lea", "sign.nc", 900 * n)
        self.badge("laser-1", "lea")
        self._summary_line(self.wait("laser-1"))
        self.say("\n5. Ana starts a long print and cancels it")
        self.badge("printer-1", "ana")
        self.job("printer-1", "ana", "vase.gcode", 20000, heat=(205, 60))
        agent = self.agent_of("printer-1")
        deadline = time.monotonic() + 60
        while agent.machines["printer-1"].snapshot()["progress"] < 0.1 and time.monotonic() < deadline:
            time.sleep(0.1)
        agent.control.cancel("printer-1", "member")
        self._summary_line(self.wait("printer-1"))
        self.say("\n6. Printer-2 goes into thermal runaway under Léa's print")
        self.job("printer-2", "lea", "gear.gcode", 3000)
        self.badge("printer-2", "lea")
        record = self.wait("printer-2")
        self._summary_line(record)
        self.say(f"     alarm: {record['job']['reason']}")

    def _summary_line(self, r: dict[str, Any]) -> None:
        t = r["time_s"]
        self.say(
            f"     -> {r['job']['outcome']} ({r['job']['stop_type']}): {t['total_s']:.1f} s "
            f"(active {t['active_s']:.1f}, heating {t['heating_s']:.1f}), {r['material_total']['g']:.2f} g, "
            f"beam {r['beam_on_s']:.1f} s; price {r['price']} {r['currency']} ({r['billing']['basis']})"
        )

    def bills(self) -> list[dict[str, Any]]:
        """Every record, as the booking system received it (or from the ledgers without a broker)."""
        expected = sum(len(a.ledger.usage_after(0, 1000)) for a in self.agents)
        if self.booking is None:
            return [r for a in self.agents for _, r in a.ledger.usage_after(0, 1000)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            len(self.booking.records) >= expected and self.all_acknowledged()
        ):
            time.sleep(0.1)
        return sorted(self.booking.records.values(), key=lambda r: r["end"])

    def all_acknowledged(self) -> bool:
        """True once the booking system's acks have reached every agent's ledger (they trail the records)."""
        return all(a.ledger.undelivered() == 0 for a in self.agents)

    def urls(self) -> None:
        for agent in self.agents:
            for m in agent.machines:
                self.say(f"  kiosk {m:10} http://127.0.0.1:{agent.api.port}/kiosk/{m}")
        if self.fleet is not None:
            self.say(
                f"  fleet dashboard  http://127.0.0.1:{self.fleet.port}/  (manager sign-in: manager / demo)"
            )

    def reset(self, machine: str) -> None:
        """Power-cycle a simulated machine, its fault repaired: Marlin stays halted after a kill until reset,
        and the demo's runaway printer gets a new thermistor."""
        sim = self.sims[machine]
        sim.stop()
        sim.options.pop("thermal_runaway_at", None)
        sim.start()

    def keep(self, seconds: float) -> None:
        """The lab goes on living (members, jobs, now and then a fault) until `seconds` or Ctrl-C."""
        from .demo_play import Play

        until = "until Ctrl-C" if seconds == float("inf") else f"for {seconds:.0f} s"
        self.say(f"\nThe lab keeps running {until}: open the URLs above. A card at a machine's reader:")
        agent = self.agent_of("printer-1")
        self.say(f"  afn-agent badge {UID['ana']} --machine printer-1 --url http://127.0.0.1:{agent.api.port} "
                 f"--key {DEMO_MANAGER_KEY}")  # fmt: skip
        try:
            Play(self).run(seconds)
        except KeyboardInterrupt:
            self.say("stopping the lab")

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if self.booking is not None:
            self.booking.stop()
        for sim in self.sims.values():
            sim.stop()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(10)


def run(fast: bool, json_out: str | None = None, keep_s: float = 0.0) -> int:
    lab = Lab(fast)
    try:
        lab.say(
            f"Starting a fab lab in {lab.work}: 2 printers, a mill, a laser (simulated), 2 agents, "
            f"{'Mosquitto, ' if shutil.which('mosquitto') else ''}a booking system, the fleet dashboard"
        )
        lab.start()
        lab.urls()
        lab.scenario()
        records = lab.bills()
        lab.say(
            f"\nBills received by the booking system (the simulators run {lab.speed}x faster than real machines;"
            "\nbeam and spindle times are what the acknowledged lines take on the real machine):"
        )
        lab.say(
            f"  {'member':8} {'machine':10} {'outcome':11} {'time':>8} {'material':>9} {'beam':>7} {'price':>8}"
        )
        total = 0.0
        for r in records:
            lab.say(
                f"  {r['member_id'] or '-':8} {r['machine']['id']:10} {r['job']['outcome']:11} "
                f"{r['time_s']['total_s']:7.1f}s {r['material_total']['g']:8.2f}g {r['beam_on_s']:6.1f}s "
                f"{r['price']:>5} {r['currency']}"
            )
            total += float(r["price"])
        lab.say(
            f"  {len(records)} records, total {total:.2f} EUR; every record acknowledged: "
            f"{lab.all_acknowledged() if lab.booking else 'no broker'}"
        )
        if json_out:
            Path(json_out).write_text(
                json.dumps(
                    {
                        "records": records,
                        "work": str(lab.work),
                        "traffic": [
                            t.decode("utf-8", "replace") for t in (lab.booking.traffic if lab.booking else [])
                        ],
                    }
                )
            )
        if keep_s:
            lab.keep(keep_s)
        return 0
    finally:
        lab.stop()
