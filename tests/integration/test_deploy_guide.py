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
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
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


GUIDE = ROOT / "docs" / "deploy.md"
COMMAND_WORDS = ("sudo", "afn-agent", "journalctl")  # a line of a block starting otherwise is output shown
# Every command of the guide, in its order, and what this test does with it: run (as written, the paths
# moved under the test's root), the unit's ExecStart instead (systemd), or covered elsewhere (named).
FOLLOWED = [
    (r"^sudo \./deploy/install\.sh", "elsewhere: deploy/test-install-chroot.sh (needs root and debootstrap)"),
    (r"^afn-agent ports$", "run"),
    (r"^afn-agent check-config /etc/afn-agent/agent\.toml$", "run"),
    (r"^sudo systemctl start afn-agent", "unit"),
    (r"^sudo apt install -y mosquitto mosquitto-clients openssl$", "run by the lab_broker fixture"),
    (r"^sudo \./deploy/mosquitto/setup-broker\.sh ", "run by the lab_broker fixture"),
    (r"^sudo systemctl restart mosquitto$", "run by the lab_broker fixture"),
    (r"^sudo cat /etc/mosquitto/afn-passwords\.txt$", "run by the lab_broker fixture"),
    (r"^sudo -u afn-agent afn-agent ledger backup ", "run"),
    (r"^afn-agent ledger export ", "run"),
    (r"^afn-agent report ", "run"),
]


def guide_commands() -> list[str]:
    """The commands of every `sh` block of docs/deploy.md, in order (the output lines shown left out)."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.split(" ", 1)[0] in COMMAND_WORDS]


def followed(command: str) -> str:
    how = next((how for pattern, how in FOLLOWED if re.search(pattern, command)), None)
    assert how is not None, f"docs/deploy.md has a command this test does not follow yet: {command}"
    return how


def run_as_written(command: str, agent_toml: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """A guide command on this test's lab: its files in place of /etc and /var, this month for November."""
    month = time.strftime("%Y-%m")
    nxt = time.strftime("%Y-%m", time.localtime(time.time() + 32 * 86400))
    line = (command.replace("sudo -u afn-agent ", "").replace("/etc/afn-agent/agent.toml", str(agent_toml))
            .replace("/var/backups/afn-agent", str(work / "backups")).replace("2026-12-01", f"{nxt}-01")
            .replace("2026-11", month))  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def unit_start(agent_toml: Path) -> list[str]:
    """`systemctl start afn-agent` as the shipped unit runs it: its ExecStartPre, then its ExecStart."""
    unit = (ROOT / "deploy" / "systemd" / "afn-agent.service").read_text()
    pre = re.search(r"^ExecStartPre=(.*)$", unit, re.M).group(1)
    start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)

    def ours(line: str) -> list[str]:
        words = line.replace("/etc/afn-agent/agent.toml", str(agent_toml)).split()
        assert words[0] == "/opt/afn-agent/venv/bin/afn-agent", words
        return [*AFN, *words[1:]]

    checked = subprocess.run(ours(pre), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    return ours(start)


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
    commands = guide_commands()
    assert [followed(c) for c in commands]  # every command of the guide is one this test knows
    work = tmp_path / "work"
    (work / "backups").mkdir(parents=True)
    for command in commands[: next(i for i, c in enumerate(commands) if "systemctl start afn-agent" in c)]:
        if followed(command) == "run":
            for path in (printers, shop):
                done = run_as_written(command, path, work)
                assert done.returncode == 0, (command, done.stderr)
                assert "check-config" not in command or done.stdout.startswith(f"{path}: ok")

    fleet_doc = (ROOT / "deploy" / "fleet.example.toml").read_text()
    manager_hash = re.search(r'sha256 = "(\w+)"', manager_lines).group(1)
    fleet_port = free_port()
    fleet_doc = (fleet_doc.replace("port = 8090", f"port = {fleet_port}").replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
                 .replace("replace-with-the-site-command-secret", COMMANDS)
                 .replace('host = "broker.fablab.lan"', 'host = "localhost"').replace("port = 8883", f"port = {lab['tls']}")
                 .replace("/etc/afn-agent/ca.crt", str(etc / "ca.crt")).replace("/var/lib/afn-fleet", str(work / "fleet"))
                 .replace("replace-with-the-fleet-broker-password", lab["passwords"]["fleet"]))  # fmt: skip
    fleet_doc = re.sub(r'sha256 = "\w+"', f'sha256 = "{manager_hash}"', fleet_doc)
    fleet_toml = etc / "fleet.toml"
    fleet_toml.write_text(fleet_doc)
    assert afn("check-config", str(fleet_toml)).returncode == 0

    booking = Booking(lab)
    procs = [subprocess.Popen(unit_start(p), stderr=subprocess.PIPE, text=True) for p in (printers, shop)]
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
        month_end = commands[next(i for i, c in enumerate(commands) if "ledger backup" in c) :]
        for command in month_end:
            done = run_as_written(command, printers, work)
            assert done.returncode == 0, (command, done.stderr)
        (copy,) = (work / "backups").glob("ledger-*.sqlite3")
        with sqlite3.connect(copy) as kept:
            assert kept.execute("SELECT count(*) FROM usage_records").fetchone()[0] == 1
        (export,) = work.glob("usage-*.csv")
        assert record["record_id"] in export.read_text()
        members = next((work / "statements").glob("statement-*-members.csv")).read_text()
        assert "ana" in members and record["price"] in members
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
