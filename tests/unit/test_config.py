"""Agent configuration: a good file loads; every bad one is refused with the file, the key and why."""

from __future__ import annotations

import pytest

from afn_agent.cli import main
from afn_agent.config import ConfigError, load_config

GOOD = """
[agent]
site = "fablab"
id = "pi-1"
data_dir = "data"

[tariffs.printer]
per_active_minute = 0.1

[[machines]]
id = "printer-1"
class = "fdm-printer"
profile = "marlin2"
port = "/dev/afn/printer-1"
tariff = "printer"

[broker]
host = "broker.lab"
command_secret = "0123456789abcdef0123"
"""


def write(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_good_config(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.site == "fablab" and cfg.data_dir == tmp_path / "data"
    assert cfg.machine("printer-1").tariff == "printer" and cfg.broker.host == "broker.lab"
    assert str(cfg.tariffs["printer"].per_active_minute) == "0.1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('site = "fablab"', 'site = "fab lab"'), r"agent\.site: a letter or digit"),
        (('id = "pi-1"', ""), r"agent\.id is required"),
        (('profile = "marlin2"', 'profile = "marlin9"'), r"machines\[0\] \(printer-1\)\.profile"),
        (('tariff = "printer"', 'tariff = "laser"'), r"no \[tariffs\.laser\]"),
        (("per_active_minute = 0.1", "per_active_minute = -2"), r"tariffs\.printer\.per_active_minute"),
        (('host = "broker.lab"', "host = 1883"), r"line 18: broker\.host: expected a string \(in quotes\), got 1883"),
        (('command_secret = "0123456789abcdef0123"', 'command_secret = "short"'), "at least 16"),
        (('port = "/dev/afn/printer-1"', 'port = "/dev/x"\nbaud = 12'), r"baud: a baud rate"),
        (("[broker]", "[brokr]"), r"line 17: brokr: unknown key \(did you mean broker\?\)"),
        (('class = "fdm-printer"', 'class = "fdm-printer"\ncolour = "red"'), r"line 13: machines\[0\] \(printer-1\)\.colour: unknown key"),
        (("[agent]", "[agent"), "not valid TOML"),
        (('tariff = "printer"\n', 'tariff = "printer"\nconsole = { language = "de" }\n'),
         r"machines\[0\] \(printer-1\)\.console\.language: expected 'fr' or 'en', got 'de'"),
        (('tariff = "printer"\n', 'tariff = "printer"\nconsole = { plate = 20 }\n'),
         r"machines\[0\] \(printer-1\)\.console\.plate: unknown key \(did you mean plate_mm\?\)"),
        (('tariff = "printer"\n', 'tariff = "printer"\nconsole = { tool_change = { X = "far" } }\n'),
         r"console\.tool_change\.X: expected a number, got 'far'"),
        (('tariff = "printer"\n', 'tariff = "printer"\nconsole = { jog_steps = [0, 1] }\n'),
         r"console\.jog_steps\[0\]: expected a number > 0"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_duplicate_machine_ids(tmp_path):
    text = GOOD + GOOD[GOOD.index("[[machines]]") : GOOD.index("[broker]")]
    with pytest.raises(ConfigError, match=r"machines\[1\] \(printer-1\)\.id: printer-1 is already machines\[0\]'s id"):
        load_config(
            write(
                tmp_path,
                text.replace('[broker]\nhost = "broker.lab"\ncommand_secret', "[broker]\ncommand_secret"),
            )
        )


def test_check_config_command(tmp_path, capsys):
    assert main(["check-config", "--no-ports", str(write(tmp_path, GOOD))]) == 0
    assert "1 machine(s): printer-1 (marlin2 on /dev/afn/printer-1)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", str(write(tmp_path, GOOD.replace("marlin2", "nope")))])
    assert exit_.value.code == 2
    assert "profile" in capsys.readouterr().err


def test_the_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"
    cfg = load_config(example)
    assert [m.id for m in cfg.machines] == ["printer-1", "printer-2", "laser-2"]
    laser = cfg.machine("laser-2")
    assert (laser.power, laser.extraction, laser.power_safe) == (
        "shelly:192.168.10.41",
        "gpio:gpiochip0:22",
        "closed",
    )
    assert cfg.preset("petg").price_per_kg is not None and cfg.stop_grace_s == 600
    console = cfg.machine("printer-1").console
    assert (console.language, console.babystep_training, console.filament_mm) == ("fr", "fdm-advanced", 90.0)
    assert cfg.access.opening_hours["sat"][0].hour == 10 and cfg.api.keys[1].role == "booking"


def test_check_config_catches_a_wrong_port_an_unknown_profile_and_a_missing_tariff(tmp_path, capsys):
    port = tmp_path / "ttyACM0"
    port.write_text("")
    good = GOOD.replace("/dev/afn/printer-1", str(port))
    assert main(["check-config", str(write(tmp_path, good))]) == 0
    assert main(["check-config", str(write(tmp_path, good.replace(str(port), "/dev/afn/nope")))]) == 2
    assert "machines[0] (printer-1).port: /dev/afn/nope does not exist" in capsys.readouterr().err
    for change, message in ((("marlin2", "marlin9"), "profile"), (('tariff = "printer"', 'tariff = "laser"'),
                            "no [tariffs.laser]")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["check-config", str(write(tmp_path, good.replace(*change)))])
        assert message in capsys.readouterr().err


def test_grafana_dashboard_queries_metrics_the_agent_exports():
    import json
    import re
    from pathlib import Path

    from afn_agent.api import metrics

    root = Path(__file__).resolve().parents[2]
    dash = json.loads((root / "deploy" / "grafana" / "afn-fleet.json").read_text())
    exported = {"afn_machine_state", "afn_job_progress_ratio", "afn_temperature_celsius", "afn_resends_total",
                "afn_jobs_total", "afn_outbox_pending", "afn_usage_undelivered", "afn_mqtt_connected",
                *(name + "_total" for name, _, _ in metrics.TOTALS)}  # fmt: skip
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"afn_[a-z_]+", t["expr"])}
    assert used and used <= exported, used - exported


def test_ports_lists_devices_and_udev_lines(monkeypatch, capsys):
    from types import SimpleNamespace

    from serial.tools import list_ports

    fake = [SimpleNamespace(device="/dev/ttyACM0", vid=0x2C99, pid=0x0002, serial_number="CZPX123",
                            manufacturer="Prusa Research", product="Original Prusa i3 MK3"),
            SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None, manufacturer=None,
                            product=None)]  # fmt: skip
    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    assert main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "/dev/ttyACM0     2c99:0002  serial=CZPX123" in out
    assert (
        'ATTRS{idVendor}=="2c99", ATTRS{idProduct}=="0002", ATTRS{serial}=="CZPX123", SYMLINK+="afn/machine-1"'
        in out
    )
    assert "ttyS0" in out and out.count("SYMLINK") == 1
