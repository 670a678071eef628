"""docs/deploy.md followed end to end, as a fab manager would on the lab's server and two Raspberry Pis:
the broker from its section 4 (run as written, tests/integration/test_deploy_broker.py), each agent's
configuration edited from deploy/agent.example.toml as section 3 says (site and id, the machines, the
broker user and password the broker section printed, the lab CA, keys made with `afn-agent api-key`),
checked with `afn-agent check-config`, run with `afn-agent run` (what the systemd unit runs), the fleet
dashboard from deploy/fleet.example.toml (section 5), a slicer upload (section 6) and a badge: the job
runs, is billed, and the booking system's acknowledgement reaches the agent's ledger.

Not run here: install.sh and systemd (deploy/test-install-chroot.sh and test_systemd.py cover them) and
udev (no USB devices: the machines are simulators on pseudo-terminals)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from afn_agent.access.directory import badge_hash
from afn_agent.sim.jobs import circle_gcode
from tests.broker import free_port
from tests.helpers import wait_for
from tests.integration.test_deploy_broker import client, lab_broker  # noqa: F401  (the broker fixture)

ROOT = Path(__file__).resolve().parents[2]
AFN = [sys.executable, "-m", "afn_agent"]
SECRET = "our-lab-badge-secret-0123456789"
COMMANDS = "our-lab-command-secret-0123456789"
ANA = "0A00C0FFEE"

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto") or not shutil.which("openssl"),
                                reason="mosquitto and openssl: deploy/dev-setup.sh installs them")  # fmt: skip


def afn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AFN, *args], capture_output=True, text=True, timeout=60)


def new_key(name: str, role: str, *more: str) -> tuple[str, str]:
    """`afn-agent api-key --name … --role …` as the guide says: the key, and the lines to paste."""
    made = afn("api-key", "--name", name, "--role", role, *more)
    assert made.returncode == 0, made.stderr
    key = re.search(r"not stored anywhere\): (\S+)", made.stdout)
    assert key, made.stdout
    return key.group(1), made.stdout[made.stdout.index("[[api.keys]]") :]


def agent_config(lab: dict, etc: Path, agent_id: str, machines: list[dict], keys: str) -> Path:
    """deploy/agent.example.toml edited as section 3 says, its comments kept (tomlkit)."""
    import tomlkit

    doc = tomlkit.parse((ROOT / "deploy" / "agent.example.toml").read_text())
    doc["agent"]["id"] = agent_id
    doc["agent"]["data_dir"] = str(etc.parent / f"var-{agent_id}")
    table = tomlkit.aot()
    for machine in machines:
        table.append(tomlkit.item(machine))
    doc["machines"] = table
    doc["access"]["badge_secret"] = SECRET
    for key in ("sync_url", "sync_token"):  # the booking system sends the directory over MQTT instead
        del doc["access"][key]
    del doc["access"]["opening_hours"]  # this test's lab is open whenever the suite runs
    broker = doc["broker"]
    broker.update({"host": "localhost", "port": lab["tls"], "username": agent_id,
                   "password": lab["passwords"][agent_id], "ca_file": str(etc / "ca.crt"),
                   "command_secret": COMMANDS})  # fmt: skip
    doc["api"]["host"] = "127.0.0.1"  # the test's lab is this host's loopback
    doc["api"]["port"] = free_port()
    del doc["api"]["keys"]
    path = etc / f"{agent_id}.toml"
    path.write_text(tomlkit.dumps(doc) + "\n" + keys)
    return path


class Booking:
    """The lab's booking system, from docs/mqtt.md: the directory out, each usage record acknowledged."""

    def __init__(self, lab: dict) -> None:
        self.records: dict[str, dict] = {}
        self.client, rc = client(lab, "booking")
        assert rc == 0
        self.client.on_message = self.on_message
        self.client.subscribe("afn/v1/fablab/+/usage", qos=1)
        members = [{"id": "ana", "name": "Ana Moreau", "badges": [{"hash": badge_hash(SECRET, ANA)}],
                    "trainings": [{"class": "fdm-printer"}, {"class": "cnc-mill"}]}]  # fmt: skip
        snapshot = {"version": 1, "members": members, "bookings": []}
        topic = "afn/v1/fablab/_directory/snapshot"
        self.client.publish(topic, json.dumps(snapshot), qos=1, retain=True).wait_for_publish(5)

    def on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        record = json.loads(msg.payload)
        self.records[record["record_id"]] = record
        c.publish(msg.topic + "/ack", json.dumps({"record_id": record["record_id"]}), qos=1)


def test_the_deploy_guide_end_to_end(lab_broker, start_sim, tmp_path):  # noqa: F811
    lab = lab_broker
    etc = tmp_path / "etc-afn-agent"
    etc.mkdir()
    shutil.copy(lab["etc"] / "certs" / "afn-ca.crt", etc / "ca.crt")  # "copy afn-ca.crt to each agent"
    printer, mill = start_sim("marlin", speed=10), start_sim("grbl", speed=10)
    slicer_key, slicer_lines = new_key("ana-laptop", "slicer", "--member", "ana")  # her uploads are hers
    manager_key, manager_lines = new_key("max", "manager")
    keys = slicer_lines + "\n" + manager_lines
    printers = agent_config(
        lab,
        etc,
        "pi-printers",
        [
            {
                "id": "printer-1",
                "class": "fdm-printer",
                "profile": "marlin2",
                "port": str(printer.link),
                "baud": printer.options["baud"],
                "tariff": "printer",
                "material": "PLA",
                "reader": "sim",
            }
        ],
        keys,
    )
    shop = agent_config(lab, etc, "pi-shop", [
        {"id": "mill-1", "class": "cnc-mill", "profile": "grbl-1.1", "port": str(mill.link),
         "baud": mill.options["baud"], "tariff": "printer", "reader": "sim"}], keys)  # fmt: skip
    for path in (printers, shop):
        checked = afn("check-config", str(path))
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"{path}: ok")

    fleet_doc = (ROOT / "deploy" / "fleet.example.toml").read_text()
    manager_hash = re.search(r'sha256 = "(\w+)"', manager_lines).group(1)
    fleet_port = free_port()
    fleet_doc = (fleet_doc.replace("port = 8090", f"port = {fleet_port}").replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
                 .replace("replace-with-the-site-command-secret", COMMANDS)
                 .replace('host = "broker.fablab.lan"', 'host = "localhost"').replace("port = 8883", f"port = {lab['tls']}")
                 .replace("/etc/afn-agent/ca.crt", str(etc / "ca.crt"))
                 .replace("replace-with-the-fleet-broker-password", lab["passwords"]["fleet"]))  # fmt: skip
    fleet_doc = re.sub(r'sha256 = "\w+"', f'sha256 = "{manager_hash}"', fleet_doc)
    fleet_toml = etc / "fleet.toml"
    fleet_toml.write_text(fleet_doc)
    assert afn("check-config", str(fleet_toml)).returncode == 0

    booking = Booking(lab)
    procs = [subprocess.Popen([*AFN, "run", "--config", str(p)], stderr=subprocess.PIPE, text=True)
             for p in (printers, shop)]  # fmt: skip
    procs.append(
        subprocess.Popen([*AFN, "fleet", "--config", str(fleet_toml)], stderr=subprocess.PIPE, text=True)
    )
    try:
        import tomllib

        api = f"http://127.0.0.1:{tomllib.loads(printers.read_text())['api']['port']}"

        def fleet_machines() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{fleet_port}/api/fleet", timeout=5) as answer:
                return json.loads(answer.read())

        def both_idle() -> bool:
            try:
                machines = fleet_machines()["machines"]
            except OSError:
                return False
            return all(machines.get(m, {}).get("state") == "idle" for m in ("printer-1", "mill-1"))

        wait_for(
            lambda: any(p.poll() is not None for p in procs) or both_idle(),
            60,
            "both agents on the dashboard",
        )
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]

        def api_up() -> bool:
            try:
                with urllib.request.urlopen(f"{api}/metrics", timeout=5):
                    return True
            except OSError:
                return False

        wait_for(api_up, 30, "pi-printers' API")
        from octorest import OctoRest

        job = circle_gcode(tmp_path / "bracket.gcode", 300, 0.5, centre=(110, 110))
        OctoRest(url=f"{api}/octoprint/printer-1/", apikey=slicer_key).upload(str(job))
        held = afn("badge", ANA, "--machine", "printer-1", "--config", str(printers), "--key", manager_key)
        assert held.returncode == 0, held.stderr
        db = etc.parent / "var-pi-printers" / "ledger.sqlite3"
        try:
            wait_for(lambda: booking.records, 120, "the usage record at the booking system")
        except AssertionError:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as seen:
                jobs = seen.execute("SELECT name, state, member_id, reason FROM jobs").fetchall()
                audit = seen.execute(
                    "SELECT actor, action, result FROM audit ORDER BY seq DESC LIMIT 8"
                ).fetchall()
                outbox = seen.execute(
                    "SELECT kind, attempts, sent_at, acked_at FROM outbox WHERE kind LIKE 'usage%'"
                ).fetchall()
            raise AssertionError(f"no usage record: jobs {jobs}, audit {audit}, outbox {outbox}") from None
        record = next(iter(booking.records.values()))
        assert (record["member_id"], record["machine"]["id"], record["job"]["outcome"]) == (
            "ana",
            "printer-1",
            "completed",
        )
        ledger = sqlite3.connect(
            f"file:{etc.parent / 'var-pi-printers' / 'ledger.sqlite3'}?mode=ro", uri=True
        )

        def acknowledged() -> bool:
            row = ledger.execute(
                "SELECT delivered_at FROM usage_records WHERE id=?", (record["record_id"],)
            ).fetchone()
            return bool(row and row[0])

        wait_for(acknowledged, 30, "the booking system's acknowledgement in the agent's ledger")
        ledger.close()
        assert fleet_machines()["manager"] is None  # the dashboard is read-only until a manager signs in
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errors = []
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
            errors.append(p.stderr.read() if p.stderr else "")
        booking.client.disconnect()
        booking.client.loop_stop()
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("Traceback" in e for e in errors), errors
