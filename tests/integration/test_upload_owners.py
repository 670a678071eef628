"""Uploads bill their owner, always: through the real HTTP server, with octorest (a client this project
did not write) uploading and pyoctoprintapi (Home Assistant's) reading with a member's own key.

- an upload sent with the shared slicer key is never started by a badge; the member at the machine
  claims it, and it is billed to them;
- a member mints their own key from their session (shown once, text and QR); uploads with it are theirs;
- a claim is refused by policy or outside one's session; a manager reassigns a job, audited;
- `afn-agent api-key --config` adds a key to the running agent, no restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import KEYS, api_table, wait_for, write_config
from tests.integration.test_access import SECRET, read_badge, snapshot


@pytest.fixture
def lab(tmp_path, start_sim):
    sim = start_sim("marlin", speed=10)
    machines = [
        {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
         "baud": sim.options["baud"], "tariff": "printer", "reader": "sim"},
        {"id": "printer-2", "class": "fdm-printer", "profile": "marlin2", "port": str(tmp_path / "absent"),
         "tariff": "printer", "reader": "sim", "claim_uploads": False, "wait_for_port": True},
    ]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(
        path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n'
    )
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(), "test")
    assert agent.machines["printer-1"].wait_ready(15)
    yield agent, f"http://127.0.0.1:{agent.api.port}", path
    agent.stop()


def part(tmp_path, name: str):
    return circle_gcode(tmp_path / name, 300, 0.3, centre=(110, 110))


def session_token(agent, machine="printer-1") -> str:
    """The token the kiosk beside the machine acts with for the member holding it (as kiosk.js gets it)."""
    return httpx.get(f"http://127.0.0.1:{agent.api.port}/v1/kiosk/{machine}").json()["token"]


def records_of(agent) -> dict[str, dict]:
    return {r["job"]["id"]: r for _, r in agent.ledger.usage_after(0, 100)}


def job_named(agent, name: str) -> dict:
    (job,) = [j for j in agent.ledger.jobs("printer-1") if j["name"] == name]
    return job


def test_shared_key_upload_waits_for_a_claim_and_bills_the_claimer(lab, tmp_path):
    from octorest import OctoRest

    agent, url, _ = lab
    shared = OctoRest(url=url, apikey=KEYS["slicer"])
    shared.upload(str(part(tmp_path, "anonymous.gcode")), print=True)
    job = job_named(agent, "anonymous.gcode")
    assert (job["state"], job["member_id"]) == ("held", None)

    assert read_badge(agent, "tom")["action"] == "opened"  # start_on_badge: his own jobs would go now
    time.sleep(1.5)  # real time: six dispatch turns, each of which releases the session member's jobs
    assert agent.ledger.job(job["id"])["state"] == "held", "a badge never starts an upload nobody owns"
    kiosk = httpx.get(f"{url}/v1/kiosk/printer-1").json()  # the screen lists it as unclaimed
    assert [j["name"] for j in kiosk["unclaimed"]] == ["anonymous.gcode"] and kiosk["queue"] == []
    start = httpx.post(f"{url}/v1/jobs/{job['id']}/start",
                       headers={"Authorization": f"Bearer {session_token(agent)}"})  # fmt: skip
    assert start.status_code == 403, "Start is for one's own jobs: nobody owns this one"

    claim = httpx.post(f"{url}/v1/jobs/{job['id']}/claim",
                       headers={"Authorization": f"Bearer {session_token(agent)}"})  # fmt: skip
    assert claim.status_code == 200, claim.text
    assert claim.json()["member_id"] == "tom"
    wait_for(lambda: agent.ledger.job(job["id"])["state"] == "completed", 30, "the claimed job's end")
    record = records_of(agent)[job["id"]]
    assert record["member_id"] == "tom" and record["job"]["outcome"] == "completed"
    (audit,) = [a for a in agent.ledger.audit_log("printer-1") if a["action"] == "job-claim"]
    assert (audit["actor"], audit["result"], audit["subject"]) == ("session:tom", "claimed", job["id"])
    again = httpx.post(f"{url}/v1/jobs/{job['id']}/claim",
                       headers={"Authorization": f"Bearer {session_token(agent)}"})  # fmt: skip
    assert again.status_code == 409 and again.json()["code"] == "claim-refused"


def test_a_members_own_key_bills_its_member(lab, tmp_path):
    import aiohttp
    from octorest import OctoRest
    from pyoctoprintapi import OctoprintClient

    agent, url, _ = lab
    assert read_badge(agent, "ana")["action"] == "opened"
    made = httpx.post(f"{url}/v1/keys", json={"name": "ana laptop"},
                      headers={"Authorization": f"Bearer {session_token(agent)}"})  # fmt: skip
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert made.json()["member_id"] == "ana" and made.json()["qr_svg"].startswith("<svg")
    listed = httpx.get(f"{url}/v1/keys", headers={"Authorization": f"Bearer {session_token(agent)}"}).json()
    assert [k["name"] for k in listed] == ["ana laptop"] and "key" not in listed[0]
    assert "sha256" not in json.dumps(listed)

    mine = OctoRest(url=url, apikey=key)  # the slicer side: the key as PrusaSlicer would hold it
    mine.upload(str(part(tmp_path, "ana-part.gcode")))
    job = job_named(agent, "ana-part.gcode")
    assert job["member_id"] == "ana" and job["submitted_by"] == "key:ana laptop"
    wait_for(
        lambda: agent.ledger.job(job["id"])["state"] == "completed", 30, "her upload, run in her session"
    )
    assert records_of(agent)[job["id"]]["member_id"] == "ana"

    async def read_with_member_key():
        async with aiohttp.ClientSession() as session:
            client = OctoprintClient("127.0.0.1", session, agent.api.port, False, "/octoprint/printer-1/")
            client.set_api_key(key)
            return await client.get_job_info()

    assert asyncio.run(read_with_member_key()).state == "Operational"

    revoked = httpx.delete(f"{url}/v1/keys/{made.json()['id']}",
                           headers={"Authorization": f"Bearer {session_token(agent)}"})  # fmt: skip
    assert revoked.status_code == 204
    assert httpx.get(f"{url}/api/version", headers={"X-Api-Key": key}).status_code == 403


def test_claims_refused_by_policy_or_outside_a_session_and_a_manager_reassigns(lab, tmp_path):
    agent, url, _ = lab
    shared = {"X-Api-Key": KEYS["slicer"]}
    files = {"file": ("other.gcode", part(tmp_path, "other.gcode").read_bytes())}
    up = httpx.post(f"{url}/octoprint/printer-2/api/files/local", headers=shared, files=files)
    assert up.status_code == 201, up.text
    (job,) = agent.ledger.jobs("printer-2")
    assert read_badge(agent, "ana", machine="printer-2")["action"] == "opened"
    token = session_token(agent, "printer-2")
    refused = httpx.post(f"{url}/v1/jobs/{job['id']}/claim", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 409 and "claim_uploads = false" in refused.json()["detail"]
    audit = [a for a in agent.ledger.audit_log("printer-2") if a["action"] == "job-claim"]
    assert audit and audit[0]["result"] == "refused"
    assert read_badge(agent, "tom")["action"] == "opened"  # at printer-1: his token may not use printer-2
    other = httpx.post(
        f"{url}/v1/jobs/{job['id']}/claim", headers={"Authorization": f"Bearer {session_token(agent)}"}
    )
    assert other.status_code == 403

    manager = {"X-Api-Key": KEYS["manager"]}
    moved = httpx.post(f"{url}/v1/jobs/{job['id']}/owner", headers=manager, json={"member_id": "ana"})
    assert moved.status_code == 200 and moved.json()["member_id"] == "ana"
    (row,) = [a for a in agent.ledger.audit_log("printer-2") if a["action"] == "job-reassign"]
    assert json.loads(row["detail_json"]) == {"before": None, "after": "ana"}
    assert (
        httpx.post(f"{url}/v1/jobs/{job['id']}/owner", headers=shared, json={"member_id": "tom"}).status_code
        == 403
    )
    unknown = httpx.post(f"{url}/v1/jobs/{job['id']}/owner", headers=manager, json={"member_id": "nobody"})
    assert unknown.status_code == 422


def test_api_key_command_adds_a_key_to_the_running_agent(lab):
    _agent, url, path = lab
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-m", "afn_agent", "api-key", "--config", str(path), "--name", "booking-2",
                          "--role", "booking"], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    key = out.stdout.split("it is not stored anywhere): ", 1)[1].split()[0]
    assert httpx.get(f"{url}/v1/usage", headers={"X-Api-Key": key}).status_code == 200, "no restart needed"
    key_id = out.stdout.split("id ", 1)[1].split()[0]
    gone = subprocess.run([sys.executable, "-m", "afn_agent", "api-key", "--config", str(path), "--revoke", key_id],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    wait_for(
        lambda: httpx.get(f"{url}/v1/usage", headers={"X-Api-Key": key}).status_code == 403, 5, "revoked"
    )


def test_reload_over_http_is_for_managers(lab):
    _agent, url, path = lab
    assert httpx.post(f"{url}/v1/reload", headers={"X-Api-Key": KEYS["slicer"]}).status_code == 403
    path.write_text(path.read_text().replace("per_active_minute = 0.10", "per_active_minute = 0.15"))
    done = httpx.post(f"{url}/v1/reload", headers={"X-Api-Key": KEYS["manager"]})
    assert done.status_code == 200 and done.json()["applied"] == ["tariffs"], done.text
    path.write_text(path.read_text().replace("[access]", "[acess]"))
    bad = httpx.post(f"{url}/v1/reload", headers={"X-Api-Key": KEYS["manager"]})
    assert bad.status_code == 422 and bad.json()["code"] == "config-invalid"
    assert "acess: unknown key (did you mean access?)" in bad.json()["detail"]
