"""A manager's command the machine's state does not offer is refused by the agent itself, with its
reason code, whoever sends it (a signed dashboard command, Home Assistant, the REST API), and audited;
the status's `actions` is exactly what goes through. Run against a simulated Marlin behind a real agent."""

from __future__ import annotations

from afn_agent.actions import MACHINE_ACTIONS, REFUSALS
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import under_way, wait_for


def check_state(agent, machine_id: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Every command the status does not offer is refused with its code; the offered list back."""
    offered = agent.control.status(machine_id)["actions"]
    for name in MACHINE_ACTIONS:
        if name in offered or name in skip:
            continue
        cmd = {"machine": machine_id, "actor": "max", "command": name, "args": {}}
        assert agent.control.command(cmd) == ("refused", REFUSALS[name]), (name, offered)
    return offered


def test_each_state_offers_its_actions_and_refuses_the_rest(one_machine, tmp_path):
    agent, _sim = one_machine("printer-1")
    send = lambda name, **args: agent.control.command(  # noqa: E731
        {"machine": "printer-1", "actor": "max", "command": name, "args": args}
    )
    assert check_state(agent, "printer-1") == ["lock", "estop"]  # idle, nothing to clear or confirm
    assert send("lock", reason="nozzle swap")[0] == "done"
    assert check_state(agent, "printer-1") == ["unlock", "estop"]  # locked
    assert send("unlock")[0] == "done"
    path = circle_gcode(tmp_path / "job.gcode", 6000, heat=None, centre=(110, 110))
    submit(agent.config, agent.ledger, "printer-1", path, "test", member_id="m-1")
    machine = agent.machines["printer-1"]
    under_way(machine, 50)
    assert check_state(agent, "printer-1") == ["pause", "cancel", "lock", "estop"]  # printing
    assert send("pause")[0] == "done"
    wait_for(lambda: agent.control.status("printer-1")["state"] == "paused", 10, "the pause")
    assert check_state(agent, "printer-1") == ["resume", "cancel", "lock", "estop"]  # paused
    assert send("lock", reason="belt")[0] == "done"  # pending: locks when the job ends
    assert check_state(agent, "printer-1") == ["resume", "cancel", "unlock", "estop"]
    assert send("resume")[0] == "done"
    assert send("cancel")[0] == "done"
    assert agent.wait_idle("printer-1", 30)
    wait_for(lambda: agent.control.status("printer-1")["locked"], 10, "the pending lock taking hold")
    assert check_state(agent, "printer-1") == ["unlock", "estop"]
    status = agent.control.status("printer-1")
    assert status["queued"] == 0 and status["actions"] == ["unlock", "estop"]
