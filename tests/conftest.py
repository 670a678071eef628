"""Fixtures: simulators in their own processes, machines bound to them, generated jobs."""

from __future__ import annotations

import pytest

from afn_agent.firmware.profile import load_profile
from afn_agent.machine.worker import Machine
from afn_agent.sim.jobs import circle_gcode
from afn_agent.sim.run import SimProcess

FAST_BAUD = 250000


@pytest.fixture
def start_sim(tmp_path):
    """start_sim(kind, **options) -> a running SimProcess, stopped at teardown."""
    sims: list[SimProcess] = []

    def start(kind: str, **options) -> SimProcess:
        options.setdefault("baud", FAST_BAUD)
        options.setdefault("move_ms", 0.5)
        sim = SimProcess(kind, tmp_path / f"sim{len(sims)}", **options)
        sim.dir.mkdir(exist_ok=True)
        sims.append(sim.start())
        return sim

    yield start
    for sim in sims:
        sim.stop()


@pytest.fixture
def one_machine(tmp_path, start_sim):
    """one_machine(machine_id, kind="marlin", profile=None, safety="", extra_machine=None, **sim_options)
    -> (agent, sim): one simulated machine behind a started agent (printer: marlin2; GRBL: a fluidnc
    laser), `safety` TOML appended to its config; the agents are stopped at teardown."""
    from afn_agent.agent import Agent
    from afn_agent.config import load_config
    from tests.helpers import write_config

    agents = []

    def make(machine_id, kind="marlin", profile=None, safety="", extra_machine=None, **sim_options):
        sim_options.setdefault("speed", 10)
        sim = start_sim(kind, **sim_options)
        machine = {"id": machine_id, "class": "fdm-printer" if kind == "marlin" else "laser",
                   "profile": profile or ("marlin2" if kind == "marlin" else "fluidnc"), "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "hold_uploads": False, **(extra_machine or {})}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", [machine])
        path.write_text(path.read_text() + safety)
        agent = Agent(load_config(path)).start()
        agents.append(agent)
        assert agent.machines[machine_id].wait_ready(15)
        return agent, sim

    yield make
    for a in agents:
        a.stop()


@pytest.fixture
def connect():
    """connect(sim, profile or name, **kw) -> a Machine ready on the simulator, closed at teardown."""
    machines: list[Machine] = []

    def make(sim: SimProcess, prof="marlin2", **kw) -> Machine:
        prof = load_profile(prof) if isinstance(prof, str) else prof
        m = Machine("m", prof, str(sim.link), baud=sim.options["baud"], **kw).start()
        machines.append(m)
        assert m.wait_ready(15), f"machine not ready: {m.state} {m.last_error}"
        return m

    yield make
    for m in machines:
        m.close()


@pytest.fixture
def circle(tmp_path):
    def make(segments: int = 800, flavour: str = "marlin", **kw):
        return circle_gcode(tmp_path / f"circle-{flavour}-{segments}.gcode", segments, flavour=flavour, **kw)

    return make


def file_commands(path, parens: bool = False) -> list[str]:
    """The commands of a file as the streamer sends them."""
    from afn_agent.gcode.lexer import wire_text

    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = wire_text(line, parens=parens)
            if text:
                out.append(text)
    return out


@pytest.fixture
def broker(tmp_path):
    """A running Mosquitto with the deploy ACLs; `broker.stop()` / `broker.start()` restart it."""
    from tests.broker import Broker

    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
