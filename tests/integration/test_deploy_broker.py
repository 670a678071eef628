"""docs/deploy.md's broker section, run as written (its `sh` block is the input; `sudo` dropped, every
file under a temporary root through AFN_ROOT) on Debian's own Mosquitto with Debian's own main
mosquitto.conf: the broker starts (the first round's drop-in stopped it: `Duplicate
persistence_location`), TLS on the lab CA admits a user with the generated password, and the ACL keeps
each user to its topics — Home Assistant's included."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.broker import free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
DEBIAN_MAIN = Path("/etc/mosquitto/mosquitto.conf")  # the package's own, as apt installs it
# Debian 12's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.11-1.2), for a host whose broker package is
# not Debian's: the settings the drop-in must not repeat are all in it.
DEBIAN_MAIN_TEXT = """pid_file /run/mosquitto/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest file /var/log/mosquitto/mosquitto.log
include_dir /etc/mosquitto/conf.d
"""

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto") or not shutil.which("openssl"),
                                reason="mosquitto and openssl: deploy/dev-setup.sh installs them")  # fmt: skip


def guide_block(section: str) -> list[str]:
    """The commands of the first `sh` block under the guide's `## <section>` heading."""
    text = GUIDE.read_text()
    part = text[text.index(f"## {section}") :]
    part = part[: part.index("\n## ", 1)] if "\n## " in part[1:] else part
    block = re.search(r"```sh\n(.*?)```", part, re.S)
    assert block, f"no sh block under {section}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def as_test(line: str) -> str | None:
    """One of the guide's commands as this test runs it: no sudo, no apt (the packages are here), the
    service restart done by the test itself."""
    line = re.sub(r"^sudo ", "", line)
    if line.startswith("apt ") or "systemctl" in line:
        return None
    return line.replace("/etc/mosquitto", "$AFN_ROOT/etc/mosquitto")


@pytest.fixture
def lab_broker(tmp_path):
    """The guide's broker section run under tmp_path, and Mosquitto started on its result."""
    root = tmp_path / "root"
    etc = root / "etc" / "mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    main = DEBIAN_MAIN.read_text() if DEBIAN_MAIN.exists() else DEBIAN_MAIN_TEXT
    for place in ("/etc/mosquitto", "/var/lib/mosquitto", "/var/log/mosquitto", "/run/mosquitto"):
        main = main.replace(place, str(root) + place)
    (etc / "mosquitto.conf").write_text(main + "user root\n")  # the test runs as whoever it is
    for d in ("var/lib/mosquitto", "var/log/mosquitto", "run/mosquitto"):
        (root / d).mkdir(parents=True)
    commands = [c for line in guide_block("4. The broker") if (c := as_test(line))]
    assert any("setup-broker.sh" in c for c in commands), commands
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(commands)], cwd=ROOT, text=True,
                         capture_output=True, env={"AFN_ROOT": str(root), "PATH": "/usr/bin:/bin:/usr/sbin"},
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    plain, tls = free_port(), free_port()
    dropin = etc / "conf.d" / "afn.conf"
    dropin.write_text(dropin.read_text().replace("listener 1883", f"listener {plain} 127.0.0.1")
                      .replace("listener 8883", f"listener {tls} 127.0.0.1"))  # fmt: skip
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(etc / "mosquitto.conf")], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: proc.poll() is not None or _open(tls), 10, "the broker's TLS listener")
        if proc.poll() is not None:
            pytest.fail(f"mosquitto did not start: {proc.stderr.read() if proc.stderr else ''}")
        passwords = dict(
            line.split() for line in out.stdout.splitlines() if re.fullmatch(r"\S+ \S{24}", line)
        )
        yield {"etc": etc, "plain": plain, "tls": tls, "passwords": passwords, "root": root}
    finally:
        proc.terminate()
        proc.wait(10)


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def client(
    lab: dict, user: str | None, password: str | None = None, tls: bool = True
) -> tuple[mqtt.Client, int]:
    """A connected paho client, and the broker's CONNACK reason code (0: admitted)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user or "", protocol=mqtt.MQTTv311)
    if user:
        c.username_pw_set(user, password if password is not None else lab["passwords"][user])
    if tls:
        c.tls_set(ca_certs=str(lab["etc"] / "certs" / "afn-ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    result: list[int] = []
    c.on_connect = lambda cl, u, f, rc, p=None: result.append(rc.value if hasattr(rc, "value") else int(rc))
    c.connect("localhost", lab["tls"] if tls else lab["plain"], 10)
    c.loop_start()
    wait_for(lambda: result, 10, f"CONNACK for {user}")
    return c, result[0]


def test_the_guides_broker_starts_on_debians_mosquitto_with_tls_and_passwords(lab_broker):
    lab = lab_broker
    assert set(lab["passwords"]) == {"pi-printers", "pi-shop", "booking", "fleet", "homeassistant"}
    assert (lab["etc"] / "afn-passwords.txt").stat().st_mode & 0o077 == 0, "the passwords are root's only"
    fleet, rc = client(lab, "fleet")
    assert rc == 0
    seen: list[tuple[str, bytes]] = []
    fleet.on_message = lambda c, u, m: seen.append((m.topic, m.payload))
    fleet.subscribe("afn/v1/fablab/#", qos=1)
    ha, rc = client(lab, "homeassistant")
    assert rc == 0
    ha_seen: list[str] = []
    ha.on_message = lambda c, u, m: ha_seen.append(m.topic)
    ha.subscribe([("afn/v1/fablab/+/status", 1), ("homeassistant/#", 1)])
    time.sleep(0.3)  # real time: the subscriptions reach the broker
    agent, rc = client(lab, "pi-printers")
    assert rc == 0
    agent.publish("afn/v1/fablab/printer-1/status", b'{"state": "idle"}', qos=1).wait_for_publish(5)
    agent.publish("afn/v1/fablab/mill-1/status", b'{"state": "forged"}', qos=1).wait_for_publish(5)
    agent.publish("homeassistant/sensor/afn_fablab_printer-1/state/config", b"{}", qos=1).wait_for_publish(5)
    wait_for(
        lambda: ("afn/v1/fablab/printer-1/status", b'{"state": "idle"}') in seen, 10, "the agent's status"
    )
    wait_for(lambda: "homeassistant/sensor/afn_fablab_printer-1/state/config" in ha_seen, 10, "discovery")
    time.sleep(0.5)  # real time: a forged message would have arrived by now
    assert ("afn/v1/fablab/mill-1/status", b'{"state": "forged"}') not in seen, (
        "the ACL keeps an agent to its machines"
    )
    assert "afn/v1/fablab/printer-1/status" in ha_seen
    for c in (fleet, ha, agent):
        c.disconnect()
        c.loop_stop()


def test_the_broker_refuses_strangers_and_wrong_passwords(lab_broker):
    lab = lab_broker
    for user, password, tls in ((None, None, True), ("fleet", "not-the-password", True), (None, None, False)):
        c, rc = client(lab, user, password, tls)
        assert rc != 0, (user, tls)
        c.loop_stop()
    c, rc = client(lab, "booking", tls=False)  # plain MQTT on the lab's network, a password still needed
    assert rc == 0
    c.disconnect()
    c.loop_stop()


def test_setup_broker_run_again_keeps_passwords_and_the_ca(lab_broker):
    lab = lab_broker
    etc = lab["etc"]
    ca = (etc / "certs" / "afn-ca.crt").read_bytes()
    before = (etc / "afn.passwd").read_text()
    out = subprocess.run([str(ROOT / "deploy" / "mosquitto" / "setup-broker.sh"), "--host", "broker.fablab.lan",
                          "--user", "fleet", "--user", "octo"], env={"AFN_ROOT": str(lab["root"]),
                          "PATH": "/usr/bin:/bin:/usr/sbin"}, text=True, capture_output=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (etc / "certs" / "afn-ca.crt").read_bytes() == ca
    after = (etc / "afn.passwd").read_text()
    assert after.startswith(before) and after.count("\n") == before.count("\n") + 1 and "octo:" in after
    bad = subprocess.run([str(ROOT / "deploy" / "mosquitto" / "setup-broker.sh"), "--user", "a b"],
                         env={"AFN_ROOT": str(lab["root"]), "PATH": "/usr/bin:/bin"}, text=True,
                         capture_output=True)  # fmt: skip
    assert bad.returncode == 2 and "user name 'a b'" in bad.stderr
