"""The API against its own OpenAPI spec: schemathesis finds no server error; every route refuses
anonymous callers and wrong roles; /metrics passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import schemathesis
from fastapi.testclient import TestClient

from afn_agent.agent import Agent
from afn_agent.api.server import create_app
from afn_agent.config import load_config
from afn_agent.sim.run import SimProcess
from tests.helpers import KEYS, api_table, write_config
from tests.integration.test_access import SECRET, snapshot


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    sim = SimProcess("marlin", tmp / "sim", speed=10, baud=250000, move_ms=0.5)
    sim.dir.mkdir()
    sim.start()
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": 250000, "tariff": "printer", "reader": "sim"}  # fmt: skip
    path = write_config(tmp / "agent.toml", [machine])
    path.write_text(path.read_text() + api_table(1.0) + f'\n[access]\nbadge_secret = "{SECRET}"\n')
    a = Agent(load_config(path)).start()
    a.access.directory.apply_snapshot(snapshot(), "test")
    assert a.machines["printer-1"].wait_ready(15)
    yield a
    a.stop()
    sim.stop()


@pytest.fixture(scope="module")
def app(agent):
    return create_app(agent)


def test_no_server_error_on_generated_input(app):
    """Every operation, inputs generated from the spec by schemathesis, as a manager (the widest role):
    never a 5xx. (Driven through hypothesis directly: schemathesis' pytest plugin does not load under
    pytest 9.)"""
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, operations, calls = [], 0, [0]
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/estop"):
            continue  # an emergency stop halts the simulated printer for the operations after it
        operations += 1

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            calls[0] += 1
            response = case.call(headers={"X-Api-Key": KEYS["manager"]})
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        run()
    assert operations > 30 and calls[0] > 10 * operations, (operations, calls)
    print(
        f"schemathesis: {calls[0]} generated requests over {operations} operations, {len(failures)} server errors"
    )
    assert failures == []


# /v1/pair takes a one-time code instead of a key (a screen not yet paired; test_console_browser checks
# it refuses wrong and used codes and pauses after ten); /v1/kiosk-words is the console's labels alone.
PUBLIC = {"/health", "/metrics", "/v1/pair", "/v1/kiosk-words"}
BODIES = {  # valid bodies, so a refusal is about the caller, not the input
    "/v1/machines/{machine_id}/lock": {"json": {"reason": "x"}},
    "/v1/jobs/{job_id}/move": {"json": {"position": 1}},
    "/v1/usage/ack": {"json": {"record_id": "x"}},
    "/v1/directory": {"json": {"snapshot": {"version": 1, "members": []}}},
}
BOOKING_ONLY = {"/v1/usage/ack", "/v1/directory", "/v1/usage"}
MANAGER_ONLY = {"/v1/machines/{machine_id}/lock", "/v1/machines/{machine_id}/unlock", "/v1/jobs/{job_id}/move",
                "/v1/sessions", "/v1/audit", "/api/connection"}  # fmt: skip


def routes(app):
    spec = TestClient(app).get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method in ops:
            yield method.upper(), path


def fill(path: str) -> str:
    return path.replace("{machine_id}", "printer-1").replace("{job_id}", "no-such-job")


def test_every_route_refuses_anonymous_and_bad_keys(app):
    client = TestClient(app)
    checked = 0
    for method, path in routes(app):
        if path in PUBLIC:
            continue
        kw = BODIES.get(path, {})
        assert client.request(method, fill(path), **kw).status_code == 401, (method, path)
        assert client.request(method, fill(path), headers={"X-Api-Key": "forged"}, **kw).status_code == 403
        checked += 1
    assert checked > 30


def test_wrong_roles_are_refused(app):
    client = TestClient(app)
    for method, path in routes(app):
        kw = BODIES.get(path, {})
        if (path in MANAGER_ONLY and method == "POST") or path in ("/v1/sessions", "/v1/audit"):
            for role in ("slicer", "booking"):
                r = client.request(method, fill(path), headers={"X-Api-Key": KEYS[role]}, **kw)
                assert r.status_code == 403, (role, method, path, r.status_code)
        if path in BOOKING_ONLY:
            r = client.request(method, fill(path), headers={"X-Api-Key": KEYS["slicer"]}, **kw)
            assert r.status_code == 403, ("slicer", method, path, r.status_code)
    for path in ("/v1/machines/printer-1/pause", "/v1/machines/printer-1/estop", "/api/job"):
        r = client.post(path, headers={"X-Api-Key": KEYS["slicer"]}, json={"command": "cancel"})
        assert r.status_code == 403, path


def test_metrics_pass_promtool(app, agent):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (deploy/dev-setup.sh installs Debian's prometheus package)")
    text = TestClient(app).get("/metrics").text
    assert 'afn_machine_state{machine="printer-1",state="idle"} 1.0' in text
    assert "member" not in text, "no member labels"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
