"""Power rules per kind of machine, the busy-time meter, and the GPIO relay through the real gpiod
library (a request object standing in for a kernel line: there is no GPIO chip on this machine)."""

from __future__ import annotations

import math

import pytest

from afn_agent.metered import Meter
from afn_agent.power.rules import COOL_UNKNOWN_S, Facts, Rule, decide
from afn_agent.power.switches import GpioSwitch, Reading, Unreachable, make_switch

IDLE = dict(job=False, session=False, waiting=False, since_use_s=math.inf, powered=False)


def facts(kind: str = "printer", **changes) -> Facts:
    return Facts(kind=kind, **{**IDLE, **changes})


def test_a_job_or_a_session_powers_any_machine():
    for kind in ("printer", "laser", "mill", "other"):
        assert decide(facts(kind, job=True), Rule()).power
        assert decide(facts(kind, session=True), Rule()).power
        assert decide(facts(kind, waiting=True), Rule()).power
        assert not decide(facts(kind), Rule()).power


def test_a_printer_stays_on_until_its_hotend_is_cool():
    hot = decide(facts(powered=True, since_use_s=5, hottest_c=180.0), Rule(cool_c=50))
    assert hot.power and "180" in hot.reason
    assert not decide(facts(powered=True, since_use_s=5, hottest_c=49.0), Rule(cool_c=50)).power
    unread = facts(powered=True, since_use_s=COOL_UNKNOWN_S - 1, hottest_c=None)
    assert decide(unread, Rule()).power, "not read: kept on for a while"
    assert not decide(facts(powered=True, since_use_s=COOL_UNKNOWN_S + 1), Rule()).power
    assert not decide(facts(powered=False, hottest_c=200.0), Rule()).power, (
        "an unpowered printer is not turned on"
    )


def test_a_laser_keeps_its_extraction_on_after_use():
    own = Rule(after_s=300, own_extraction=True)
    d = decide(facts("laser", since_use_s=60), own)
    assert (d.power, d.extraction) == (False, True), "the laser off, its extraction on"
    d = decide(facts("laser", since_use_s=60), Rule(after_s=300))
    assert (d.power, d.extraction) == (True, True), "one switch for both: it stays on"
    d = decide(facts("laser", since_use_s=301), own)
    assert (d.power, d.extraction) == (False, False)


def test_the_meter_counts_busy_time_between_samples():
    m = Meter(threshold_w=50)
    for t, w in ((0.0, 10), (1.0, 10), (2.0, 900), (3.0, 900), (4.0, 10), (5.0, 10)):
        m.sample(t, w)
    assert m.busy_s == pytest.approx(2.0), "a change is placed half way between the samples that saw it"
    assert not m.in_use
    figures = m.figures({"total_s": 5.0, "active_s": 5.0, "heating_s": 0.0, "paused_s": 0.0, "idle_s": 0.0})
    assert (figures["active_s"], figures["idle_s"], figures["source"]) == (2.0, 3.0, "power")
    none = Meter(threshold_w=50)
    none.sample(1.0, None)
    assert none.figures({"total_s": 5.0})["source"] == "session" and none.in_use


class FakeRequest:
    """Stands in for gpiod's LineRequest on a kernel line."""

    def __init__(self, path, config, consumer):
        self.path, self.config, self.consumer = path, config, consumer
        self.values = {line: settings.output_value for line, settings in config.items()}
        self.released = False

    def set_value(self, line, value):
        self.values[line] = value

    def get_value(self, line):
        return self.values[line]

    def release(self):
        self.released = True


def test_a_gpio_relay_through_gpiod(monkeypatch):
    gpiod = pytest.importorskip("gpiod")
    requests = []
    monkeypatch.setattr(gpiod, "request_lines", lambda path, config, consumer: requests.append(
        FakeRequest(path, config, consumer)) or requests[-1])  # fmt: skip
    relay = make_switch("gpio:gpiochip0:17:active_low", None)
    assert isinstance(relay, GpioSwitch)
    (req,) = requests
    settings = req.config[17]
    assert req.path == "/dev/gpiochip0" and settings.direction == gpiod.line.Direction.OUTPUT
    assert settings.active_low is True and settings.output_value == gpiod.line.Value.INACTIVE, "starts off"
    relay.set(True)
    assert req.values[17] == gpiod.line.Value.ACTIVE and relay.read().on
    relay.set(False)
    assert not relay.read().on
    relay.close()
    assert req.released


def test_a_missing_gpio_chip_is_an_unreachable_switch():
    pytest.importorskip("gpiod")
    with pytest.raises(Unreachable, match="/dev/gpiochip9 line 3"):
        GpioSwitch("gpiochip9", 3)


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        ({"profile": "laser-power-only"}, r"machines\[0\] \(m1\)\.power is required"),
        ({"profile": "marlin2", "port": "/dev/null", "power": "relay:3"}, r"\.power: sim, gpio:<chip>"),
        (
            {"profile": "marlin2", "port": "/dev/null", "power": "tasmota:plug1"},
            r"Tasmota switch speaks MQTT",
        ),
        (
            {"profile": "marlin2", "port": "/dev/null", "power": "sim", "power_safe": "ajar"},
            r"power_safe: expected 'closed' or 'open', got 'ajar'",
        ),
        ({"profile": "laser-power-only", "power": "sim", "busy_w": 0}, r"busy_w: expected a number > 0"),
    ],
)
def test_power_settings_are_checked_by_name(tmp_path, machine, message):
    from afn_agent.config import ConfigError, load_config
    from tests.helpers import write_config

    path = write_config(tmp_path / "agent.toml", [{"id": "m1", "class": "laser", **machine}])
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_power_defaults_follow_the_kind(tmp_path):
    from afn_agent.config import load_config
    from tests.helpers import write_config

    path = write_config(tmp_path / "agent.toml", [
        {"id": "laser", "class": "laser", "profile": "laser-power-only", "power": "shelly:10.0.0.7#1"},
        {"id": "printer", "class": "fdm-printer", "profile": "marlin2", "port": "/dev/null", "power": "sim"},
    ])  # fmt: skip
    laser, printer = load_config(path).machines
    assert (laser.power_safe, laser.power_after_s, laser.port) == ("closed", 300.0, "")
    assert (printer.power_safe, printer.power_after_s, printer.power_cool_c) == ("open", 0.0, 50.0)


@pytest.mark.parametrize("value", [True, "900", float("nan"), float("inf"), 1e309, None, [900], {"W": 1}])
def test_a_hostile_power_figure_is_no_figure(value):
    from afn_agent.power.switches import watts_of

    assert watts_of(value) is None


def test_a_shelly_answer_with_infinite_power_is_not_busy_for_ever():
    from tests.devices.shelly import ShellyPlug

    plug = ShellyPlug()
    try:
        switch = make_switch(f"shelly:{plug.host}", None)
        plug.call("Switch.Set", {"id": 0, "on": True})
        plug.load_w = float("inf")  # its JSON answer carries Infinity
        assert switch.read() == Reading(True, None)
        plug.load_w = 900.0
        assert switch.read().watts == 900.0
    finally:
        plug.close()
