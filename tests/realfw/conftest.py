"""Fixtures for the real-firmware suite: firmware processes behind ptys, machines bound to them."""

from __future__ import annotations

import os

import pytest

from afn_agent.firmware.profile import Profile, load_profile
from afn_agent.machine.worker import Machine
from tests.realfw.firmware import RealFirmware, available

_missing = available()
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"the real-firmware suite needs {_missing} (CI runs it)")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"real firmware not here: {_missing}")


@pytest.fixture
def real_fw(tmp_path):
    """real_fw(kind, **env) -> a started RealFirmware, stopped at teardown."""
    started: list[RealFirmware] = []

    def start(kind: str, **env: str) -> RealFirmware:
        fw = RealFirmware(kind, tmp_path / f"{kind}{len(started)}", env).start()
        started.append(fw)
        return fw

    yield start
    for fw in started:
        fw.stop()


@pytest.fixture
def machine_on():
    """machine_on(port, profile name or Profile) -> a Machine ready on that port, closed at teardown."""
    machines: list[Machine] = []

    def make(port, prof: str | Profile = "marlin2", ready: bool = True, **kw) -> Machine:
        m = Machine("m", load_profile(prof) if isinstance(prof, str) else prof, str(port), **kw).start()
        machines.append(m)
        if ready:
            assert m.wait_ready(30), f"machine not ready: {m.state} {m.last_error}"
        return m

    yield make
    for m in machines:
        m.close()
