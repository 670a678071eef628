"""Home Assistant's OctoPrint set-up, as HA runs it: pyoctoprintapi (HA's own client library) probes the
AppKeys plugin, asks for a key and polls; a manager grants it with the CLI (a separate process, on the
ledger) or the API; then HA's getters run with the granted key. Nothing is granted automatically."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import aiohttp
import pytest
import requests

from afn_agent.ledger.appkeys import PENDING_MAX, AppKeyRequests
from tests.helpers import KEYS, wait_for
from tests.integration.test_octoprint_clients import served  # noqa: F401 (fixture)

APP = "Home Assistant"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "afn_agent", *args], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def grant_when_asked(agent, config_path, how: str) -> threading.Thread:
    """A manager who watches the waiting requests and decides the first one (CLI or HTTP)."""

    def run() -> None:
        book = AppKeyRequests(agent.keys)
        row = wait_for(lambda: book.pending(), 20, "a key request")[0]
        if how == "cli-grant":
            done = cli("appkeys", "--config", str(config_path))
            assert row["id"] in done.stdout and APP in done.stdout, done
            done = cli("appkeys", "--config", str(config_path), "--grant", row["id"])
            assert done.returncode == 0 and "granted" in done.stdout, done
        else:
            url = f"http://127.0.0.1:{agent.api.port}/v1/appkeys/{row['id']}"
            r = requests.post(url, json={"grant": how == "http-grant"}, headers={"X-Api-Key": KEYS["manager"]})
            assert r.status_code == 200, r.text

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_home_assistant_set_up_flow_with_a_key_granted_from_the_cli(served):  # noqa: F811 (the fixture imported above)
    from pyoctoprintapi import OctoprintClient

    agent, url = served
    port = agent.api.port

    async def run():
        async with aiohttp.ClientSession() as session:
            client = OctoprintClient("127.0.0.1", session, port, False, "/octoprint/printer-1/")
            manager = grant_when_asked(agent, agent.config.path, "cli-grant")
            key = await client.request_app_key(APP, "ana", 30)  # what HA's config flow calls
            manager.join(5)
            client.set_api_key(key)
            discovery = await client.get_discovery_info()  # HA's unique id for the entry
            again = await client.get_discovery_info()
            other = OctoprintClient("127.0.0.1", session, port, False, "/octoprint/printer-2/")
            other.set_api_key(KEYS["manager"])
            elsewhere = await other.get_discovery_info()
            printer = await client.get_printer_info()  # the coordinator's two polls
            job = await client.get_job_info()
            server = await client.get_server_info()
            webcam = await client.get_webcam_info()
            tracking = await client.get_tracking_info()
            return key, discovery, again, elsewhere, printer, job, server, webcam, tracking

    key, discovery, again, elsewhere, printer, job, server, webcam, tracking = asyncio.run(run())
    assert discovery.upnp_uuid and discovery.upnp_uuid == again.upnp_uuid != elsewhere.upnp_uuid
    assert {t.name for t in printer.temperatures} >= {"tool0", "bed"}
    assert printer.state.flags.operational and job.state == "Operational"
    assert server.version.startswith("1.") and tracking is None and webcam is not None
    # the granted key reads its one machine and does nothing else
    h = {"X-Api-Key": key}
    assert requests.get(f"{url}/octoprint/printer-1/api/job", headers=h).status_code == 200
    assert requests.get(f"{url}/octoprint/printer-2/api/job", headers=h).status_code == 403
    r = requests.post(f"{url}/octoprint/printer-1/api/job", headers=h, json={"command": "cancel"})
    assert r.status_code == 403
    rows = {(a["action"], a["result"]) for a in agent.ledger.audit_log(None, 200)}
    assert {("appkey-request", "waiting"), ("appkey-decision", "granted"), ("appkey-collect", "granted")} <= rows
    assert next(k for k in agent.keys.list() if k["role"] == "viewer")["machines"] == ["printer-1"]


def test_a_denied_request_fails_the_flow_and_a_key_is_collected_once(served):  # noqa: F811 (the fixture imported above)
    from pyoctoprintapi import OctoprintClient
    from pyoctoprintapi.exceptions import ApiError

    agent, url = served

    async def denied():
        async with aiohttp.ClientSession() as session:
            client = OctoprintClient("127.0.0.1", session, agent.api.port, False, "/octoprint/printer-1/")
            manager = grant_when_asked(agent, agent.config.path, "http-deny")
            try:
                with pytest.raises(ApiError, match="denied"):
                    await client.request_app_key(APP, "tom", 30)
            finally:
                manager.join(5)

    asyncio.run(denied())
    base = f"{url}/octoprint/printer-1/plugin/appkeys"
    assert requests.get(f"{base}/probe").status_code == 204
    r = requests.post(f"{base}/request", json={"app": "Phone", "user": "ana"})
    assert r.status_code == 201 and r.headers["Location"].endswith(r.json()["app_token"])
    poll = f"{url}{r.headers['Location']}"
    assert requests.get(poll).status_code == 202  # nobody decided yet: nothing granted by itself
    pending = requests.get(f"{url}/v1/appkeys", headers={"X-Api-Key": KEYS["manager"]}).json()
    assert [p["app"] for p in pending] == ["Phone"]
    assert requests.get(f"{url}/v1/appkeys", headers={"X-Api-Key": KEYS["slicer"]}).status_code == 403
    refused = requests.post(f"{url}/v1/appkeys/{pending[0]['id']}", json={"grant": True},
                            headers={"X-Api-Key": KEYS["slicer"]})  # fmt: skip
    assert refused.status_code == 403
    granted = requests.post(f"{url}/v1/appkeys/{pending[0]['id']}", json={"grant": True},
                            headers={"X-Api-Key": KEYS["manager"]})  # fmt: skip
    assert granted.status_code == 200 and granted.json()["decision"] == "granted"
    first = requests.get(poll)
    assert first.status_code == 200 and first.json()["api_key"]
    assert requests.get(poll).status_code == 404  # the key is shown once
    again = requests.post(f"{url}/v1/appkeys/{pending[0]['id']}", json={"grant": False},
                          headers={"X-Api-Key": KEYS["manager"]})  # fmt: skip
    assert again.status_code == 404  # decided already


def test_the_fleet_dashboards_signed_decision_binds_the_request_to_its_machine(served):  # noqa: F811 (fixture)
    agent, url = served
    base = f"{url}/octoprint/printer-1/plugin/appkeys"
    poll = f"{url}{requests.post(f'{base}/request', json={'app': APP}).headers['Location']}"
    (row,) = AppKeyRequests(agent.keys).pending()
    decide = {"actor": "max", "command": "appkey-decision", "args": {"request": row["id"], "grant": True}}
    assert agent.control.command({**decide, "machine": "printer-2"}) == ("refused", "no_such_request")
    assert agent.control.command({**decide, "machine": "printer-1", "args": {"request": 5}})[0] == "refused"
    assert agent.control.command({**decide, "machine": "printer-1"}) == ("done", "granted")
    assert requests.get(poll).status_code == 200


def test_hostile_key_requests_are_refused_and_bounded(served):  # noqa: F811 (the fixture imported above)
    agent, url = served
    base = f"{url}/octoprint/printer-1/plugin/appkeys"
    assert requests.post(f"{base}/request", json={"app": "x" * 5000}).status_code == 422
    assert requests.post(f"{base}/request", json={"app": ["list"]}).status_code == 422
    assert requests.post(f"{base}/request", data=b"not json").status_code == 400
    assert requests.get(f"{base}/request/made-up-token").status_code == 404
    for n in range(PENDING_MAX):
        assert requests.post(f"{base}/request", json={"app": f"flood {n}"}).status_code == 201
    full = requests.post(f"{base}/request", json={"app": "one too many"})
    assert full.status_code == 429 and full.json()["code"] == "busy"
    refused = [a for a in agent.ledger.audit_log(None, 500)
               if a["action"] == "appkey-request" and a["result"] == "refused"]  # fmt: skip
    assert len(refused) >= 3  # the long name, the list, the one too many
    assert len(AppKeyRequests(agent.keys).pending()) == PENDING_MAX


def test_temperature_targets_through_the_octoprint_face_are_the_consoles_preheat(served):  # noqa: F811 (fixture)
    """pyoctoprintapi's set_bed_temperature / set_tool_temperature (HA's number entities): a manager's key
    heats, the viewer key HA was granted does not, a target outside the printer's limits is refused."""
    from pyoctoprintapi import OctoprintClient
    from pyoctoprintapi.exceptions import ApiError

    agent, url = served
    viewer, _ = agent.keys.add("Home Assistant", "viewer", "test", machines=("printer-1",))
    m = agent.machines["printer-1"]

    async def run():
        async with aiohttp.ClientSession() as session:
            ha = OctoprintClient("127.0.0.1", session, agent.api.port, False, "/octoprint/printer-1/")
            ha.set_api_key(viewer)
            with pytest.raises(ApiError):
                await ha.set_bed_temperature(50)
            boss = OctoprintClient("127.0.0.1", session, agent.api.port, False, "/octoprint/printer-1/")
            boss.set_api_key(KEYS["manager"])
            await boss.set_tool_temperature("tool0", 190)
            await boss.set_bed_temperature(55)

    asyncio.run(run())
    wait_for(lambda: m.temperatures.get("T", (0, 0))[1] == 190 and m.temperatures.get("B", (0, 0))[1] == 55,
             10, "the printer reporting targets 190/55")  # fmt: skip
    tool = requests.get(f"{url}/octoprint/printer-1/api/printer/tool", headers={"X-Api-Key": viewer}).json()
    assert tool["tool0"]["target"] == 190
    h = {"X-Api-Key": KEYS["manager"]}
    base = f"{url}/octoprint/printer-1/api/printer"
    assert requests.post(f"{base}/tool", headers=h, json={"command": "target", "targets": {"tool1": 200}}).status_code == 400
    assert requests.post(f"{base}/bed", headers=h, json={"command": "target", "target": "hot"}).status_code == 400
    assert requests.post(f"{base}/bed", headers=h, json={"command": "target", "target": 999}).status_code == 422
    assert requests.post(f"{base}/bed", headers=h, json={"command": "offset", "offset": 5}).status_code == 400
    rows = [(a["action"], a["result"]) for a in agent.ledger.audit_log("printer-1", 200) if "printer-" in a["action"]]
    assert rows.count(("api:printer-bed", "refused")) >= 4 and ("api:printer-tool", "done") in rows
