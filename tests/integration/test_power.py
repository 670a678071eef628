"""Machine power under the agent's control, per driver, against devices speaking their documented
protocol: a simulated relay, a Shelly Gen2 plug over HTTP RPC on loopback (tests/devices/shelly.py), a
Tasmota plug on the real Mosquitto (tests/devices/tasmota.py). GPIO goes through gpiod where a chip
exists, else the simulated line stands in for it.

Power on at an allowed badge, never off during a job (the member badges out mid-job), off after the
job once nobody holds the machine, an alarm and the configured safe side when the switch stops
answering. A power-only laser (no serial) is billed from its session with the plug's busy time."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.ledger.usage import reprice
from afn_agent.sim.jobs import circle_gcode
from tests.broker import Broker, password
from tests.devices.shelly import ShellyPlug
from tests.devices.tasmota import TasmotaPlug
from tests.helpers import api_table, wait_for, write_config
from tests.integration.test_access import SECRET, day, read_badge, snapshot


class Device:
    """What a test needs of any of the three: the relay as the device has it, and making it go silent."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind, self.broker, self.plug = kind, None, None
        if kind == "shelly":
            self.plug = ShellyPlug()
            self.spec = f"shelly:{self.plug.host}"
        elif kind == "tasmota":  # the shipped ACL: the agent as pi-printers, the plug as its own user
            self.broker = Broker(tmp_path / "broker").start()
            self.plug = TasmotaPlug(self.broker.port, "printer2-plug", tele_period_s=2.0, username="printer2-plug",
                                    password=password("printer2-plug"))  # fmt: skip
            self.spec = "tasmota:printer2-plug"
        else:
            self.spec = "sim"
        self.agent = None

    def on(self) -> bool:
        if self.kind == "sim":
            return self.agent.plugs["printer-1"].switch.on
        return self.plug.output if self.kind == "shelly" else self.plug.power

    def switched(self) -> list[tuple[float, bool]]:
        if self.kind == "sim":
            return [(0.0, on) for on in self.agent.plugs["printer-1"].switch.switched]
        return list(self.plug.switched)

    def go_silent(self) -> None:
        if self.kind == "sim":
            self.agent.plugs["printer-1"].switch.reachable = False
        elif self.kind == "shelly":
            self.plug.silent = True
        else:
            self.plug.go_offline()

    def close(self) -> None:
        if self.plug is not None:
            self.plug.close()
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture
def powered(tmp_path, start_sim):
    made = []

    def make(kind: str, safe: str = "closed") -> tuple[Agent, Device]:
        device = Device(kind, tmp_path)
        sim = start_sim("marlin", speed=2, move_ms=2.0)
        machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "reader": "sim", "power": device.spec,
                   "power_poll_s": 0.2, "power_safe": safe}  # fmt: skip
        broker = None
        if device.broker is not None:
            broker = {"host": "127.0.0.1", "port": device.broker.port, "username": "pi-printers",
                      "password": password("pi-printers")}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", [machine], broker=broker)
        path.write_text(
            path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n'
        )
        agent = Agent(load_config(path)).start()
        agent.access.directory.apply_snapshot(snapshot(), "test")
        device.agent = agent
        made.append((agent, device))
        assert agent.machines["printer-1"].wait_ready(15)
        return agent, device

    yield make
    for agent, device in made:
        agent.stop()
        device.close()


@pytest.mark.parametrize("kind", ["sim", "shelly", "tasmota"])
def test_power_follows_the_session_never_cut_mid_job_and_fails_to_its_safe_side(powered, tmp_path, kind):
    agent, device = powered(kind)
    wait_for(lambda: device.switched() and not device.on(), 10, "power off while nobody holds the machine")
    # read back at the next poll; a loaded host may first miss one answer (3 s), then read it again
    wait_for(lambda: agent.control.status("printer-1")["power"]["on"] is False, 15, "the off read back")

    assert read_badge(agent, "ana")["action"] == "opened"
    wait_for(device.on, 5, "power on at an allowed badge")
    job_id, _ = submit(agent.config, agent.ledger, "printer-1",
                       circle_gcode(tmp_path / "part.gcode", 2500, 0.1, centre=(110, 110)), "cli", held=False, member_id="ana")  # fmt: skip
    wait_for(lambda: agent.ledger.job(job_id)["state"] == "running", 15, "the job running")
    started = time.monotonic()
    assert read_badge(agent, "ana")["action"] == "badge-out"  # she leaves; her job finishes (session_end)
    wait_for(lambda: agent.ledger.job(job_id)["state"] == "completed", 60, "the job's end")
    ended = time.monotonic()
    assert device.on(), "still on at the job's end"
    if kind != "sim":  # the devices log when they were switched
        assert not [t for t, on in device.switched() if started <= t <= ended and not on], "cut mid-job"
    wait_for(lambda: not device.on(), 10, "power off after the job, nobody at the machine, hotend cool")
    reasons = [json.loads(a["detail_json"])["reason"] for a in agent.ledger.audit_log("printer-1", 500)
               if a["action"] == "power"]  # fmt: skip
    # newest first: off at start, on for her session (the job kept it on), off once all was over
    assert reasons == ["no session and no job", "a member's session is open", "no session and no job"]

    def switched_events() -> list[bool]:
        rows = agent.ledger.conn.execute("SELECT payload FROM outbox WHERE kind='event' ORDER BY seq")
        return [e["on"] for e in map(json.loads, (r[0] for r in rows)) if e["type"] == "power"]

    wait_for(lambda: switched_events() == [False, True, False], 5, "power events: off, on, off")

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.api.port}/metrics") as resp:
            return resp.read().decode()

    wait_for(lambda: 'afn_power_on{machine="printer-1"} 0.0' in metrics(), 5, "power off in /metrics")
    assert 'afn_power_switch_reachable{machine="printer-1"} 1.0' in metrics()

    device.go_silent()
    status = wait_for(
        lambda: (s := agent.control.status("printer-1"))["alarms"] and s, 15, "the switch's alarm"
    )
    assert status["power"]["reachable"] is False, (status["alarms"], status["power"])
    assert [a["type"] for a in status["alarms"]] == ["power-unreachable"]
    assert status["alarms"][0]["text"]["fr"].startswith("Le relais d'alimentation")
    refused = read_badge(agent, "bob" if kind == "never" else "ana")
    assert refused["result"] == "machine_locked" and "power switch does not answer" in refused["detail"]


def test_open_safe_side_keeps_the_machine_usable_without_its_switch(powered):
    agent, device = powered("shelly", safe="open")
    wait_for(lambda: device.switched(), 10, "the first switching")
    device.go_silent()
    wait_for(lambda: agent.control.status("printer-1")["power"]["reachable"] is False, 15, "unreachable")
    assert read_badge(agent, "ana")["action"] == "opened", "open: the machine is used without power control"
    device.plug.silent = False  # it answers again: the session's power goes on
    wait_for(device.on, 10, "power on once the switch answers")
    assert agent.control.status("printer-1")["power"]["reachable"] is True


def test_a_power_only_laser_is_billed_from_its_session_and_the_plugs_busy_time(tmp_path):
    plug = ShellyPlug()
    machine = {"id": "laser-1", "class": "laser", "profile": "laser-power-only", "power": f"shelly:{plug.host}",
               "power_poll_s": 0.2, "busy_w": 50, "power_after_s": 1, "reader": "sim", "tariff": "laser"}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    path.write_text(path.read_text() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')
    agent = Agent(load_config(path)).start()
    try:
        trained = {"trainings": [{"class": "laser", "expires": day(365)}]}
        agent.access.directory.apply_snapshot(snapshot(ana=trained), "test")
        wait_for(lambda: plug.switched and not plug.output, 10, "the laser off, nobody at it")
        assert read_badge(agent, "ana", machine="laser-1")["action"] == "opened"
        wait_for(lambda: plug.output, 5, "the laser powered for the session")
        plug.set_load(12)  # idle: controller, fans
        for watts, seconds in ((12, 1.0), (880, 2.0), (12, 1.0), (910, 1.5), (12, 0.8)):
            plug.set_load(watts)
            time.sleep(seconds)  # real time: the plug is read at its own pace, as a real one would be
        assert read_badge(agent, "ana", machine="laser-1")["action"] == "badge-out"
        (record,) = wait_for(
            lambda: [r for _, r in agent.ledger.usage_after(0, 10)], 10, "the session's record"
        )
        truth = plug.busy_s(50, 0.0, time.monotonic())
        assert truth == pytest.approx(3.5, abs=0.1)
        print(f"power-only laser: record active {record['time_s']['active_s']:.3f} s, plug busy {truth:.3f} s, "
              f"session {record['time_s']['total_s']:.3f} s")  # fmt: skip
        assert record["source"] == "power" and record["member_id"] == "ana"
        assert record["time_s"]["active_s"] == pytest.approx(truth, abs=1.0), (record["time_s"], truth)
        assert record["time_s"]["idle_s"] > 1.5 and record["job"]["source"] == "session"
        assert record["price"] == reprice(record)
        assert float(record["billing"]["quantities"]["active_min"]) == pytest.approx(
            record["time_s"]["active_s"] / 60, abs=1e-3
        )
        wait_for(lambda: not plug.output, 5, "off once the extraction's minute is over")
        with pytest.raises(Exception, match="not driven by the agent"):
            submit(agent.config, agent.ledger, "laser-1", circle_gcode(tmp_path / "x.gcode", 10), "cli")
        plug.silent = True
        wait_for(lambda: agent.control.status("laser-1")["power"]["reachable"] is False, 15, "unreachable")
        refused = read_badge(agent, "ana", machine="laser-1")
        assert refused["result"] == "machine_locked", "a laser's switch fails closed by default"
    finally:
        agent.stop()
        plug.close()


def test_a_printer_stays_powered_until_its_hotend_has_cooled(tmp_path, start_sim):
    """The job heats to 200 °C and its end turns the heaters off (as slicers' end code does): the relay
    stays on while the hotend cools (its fan runs only with power), and goes off below power_cool_c."""
    sim = start_sim("marlin", speed=10, move_ms=2.0)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "power": "sim", "power_poll_s": 0.2,
               "power_cool_c": 150}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    agent = Agent(load_config(path)).start()
    try:
        assert agent.machines["printer-1"].wait_ready(15)
        job = tmp_path / "hot.gcode"
        moves = "".join(f"G1 X{100 + i % 20} Y{100 + i % 7} F6000\n" for i in range(300))
        job.write_text(f"M104 S200\nM109 S200\nG90\n{moves}M104 S0\nM140 S0\n")
        job_id, _ = submit(agent.config, agent.ledger, "printer-1", job, "cli", held=False)
        relay = agent.plugs["printer-1"].switch
        wait_for(lambda: agent.ledger.job(job_id)["state"] == "completed", 60, "the hot job's end")
        assert relay.on, "on at the job's end"
        status = wait_for(lambda: (s := agent.control.status("printer-1")["power"])["reason"].startswith("cooling")
                          and s, 5, "cooling down")  # fmt: skip
        assert status["on"] is True
        wait_for(lambda: not relay.on, 30, "off once the hotend is below 150 °C")
        hotend = agent.machines["printer-1"].temperatures["T"][0]
        assert hotend < 160, hotend  # read within a poll of the switching
        reasons = [json.loads(a["detail_json"])["reason"] for a in agent.ledger.audit_log("printer-1", 100)
                   if a["action"] == "power"]  # fmt: skip
        assert reasons[0] == "no session and no job" and reasons[1].startswith("cooling down: hotend")
    finally:
        agent.stop()
