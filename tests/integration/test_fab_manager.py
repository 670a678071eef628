"""`[directory] source = "fab-manager"`: members, trainings and machine reservations pulled from Fab-manager's
Open API v1 (a server built from its documentation, tests/devices/fab_manager.py) decide at a real agent's
simulated reader; pages, retries, quick pulls and failures as a lab would meet them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import httpx
import pytest

from afn_agent.agent import Agent
from afn_agent.config import ConfigError, load_config
from tests.devices.fab_manager import FabManagerServer, hours
from tests.helpers import KEYS, api_table, write_config
from tests.integration.test_access import SECRET, read_badge

ANA, BOB, CID, MAX = "J5821-4", "J5846-4", "J5900-1", "P4172-4"  # users 1746, 1745, 1744, 1743 of the docs


@pytest.fixture
def lab(tmp_path, start_sim):
    fm = FabManagerServer().start()
    # 1746 trained on 3D printers (training 1) with a reservation now; 1745 not trained; 1744 trained, but
    # their reservation is in three hours; 1743 is a manager (by user id); a fifth user makes three pages.
    fm.add_user(1747, "0A00EEEE01", "Eve Extra")
    for user in (1746, 1744):
        fm.add_training(user, 1)
    fm.add_training(1745, 2)  # laser / vinyl: not a printer's class
    fm.add_reservation(1746, 4, hours(-0.5), hours(1.5))
    fm.add_reservation(1744, 4, hours(3), hours(4))
    fm.add_reservation(1745, 4, hours(5), hours(6), canceled=True)
    agents: list[Agent] = []

    def make(extra: str = "", token: str | None = None) -> Agent:
        sim = start_sim("marlin", speed=10)
        machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
                   "baud": sim.options["baud"], "tariff": "printer", "reader": "sim", "booking_required": True}  # fmt: skip
        path = write_config(tmp_path / "agent.toml", [machine])
        path.write_text(path.read_text() + api_table() + f"""
[access]
badge_secret = "{SECRET}"
debounce_s = 0.2

[directory]
source = "fab-manager"
url = "{fm.url}"
token = "{token or fm.token}"
per_page = 2
backoff_s = 0.05
managers = [1743]
{extra}
[directory.machines]
imprimante-3d = "printer-1"

[directory.trainings]
1 = "fdm-printer"
""")
        agent = Agent(load_config(path)).start()
        agents.append(agent)
        assert agent.machines["printer-1"].wait_ready(15)
        return agent

    make.fm = fm  # type: ignore[attr-defined]
    yield make
    for agent in agents:
        agent.stop()
    fm.stop()


def first_pull(agent: Agent) -> None:
    """The sync thread's first (full) pull, waited for."""
    from tests.helpers import wait_for

    wait_for(lambda: agent.access.sync_status.last_full is not None, 15, "the first pull from Fab-manager")
    assert agent.access.sync_status.ok, agent.access.sync_status


def test_trained_and_booked_allowed_untrained_refused_outside_booking_refused(lab):
    agent = lab()
    first_pull(agent)
    fm = lab.fm
    pages = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query) for p in fm.requests if "/users?" in p]
    assert [q["page"] for q in pages] == [["1"], ["2"], ["3"]], fm.requests  # 5 users, 2 a page
    assert read_badge(agent, BOB)["result"] == "not_trained"
    assert read_badge(agent, CID)["result"] in ("booking_required", "booked_by_other")
    decided = read_badge(agent, ANA)
    assert decided["result"] == "allowed" and decided["actor"] == "1746"
    session = agent.access.sessions.current("printer-1")
    assert session["member_id"] == "1746" and session["booking_id"].startswith("fm-")
    member = agent.access.directory.member("1746")
    assert member.name == "xxxx xxxx" and set(member.trainings) == {"fdm-printer"}
    assert agent.access.directory.member("1743").has_role("manager")
    # the cancelled slot is no booking; only machine 4's reservations were asked for
    assert not [b for b in agent.access.directory.bookings("printer-1", hours(4.5), hours(7))]
    assert all("reservable_type=Machine" in p for p in fm.requests if "/reservations?" in p)


def test_quick_pull_brings_a_member_trained_today(lab):
    agent = lab()
    first_pull(agent)
    fm = lab.fm
    fm.add_user(1800, "0A00ABCD99", "Zoé Nouvelle")
    fm.add_training(1800, 1)
    fm.add_reservation(1800, 4, hours(2), hours(3))
    fm.add_training(1745, 1)  # an existing member trained today
    before = len(fm.requests)
    status = agent.access.pull_fab_manager()
    assert status.ok and status.last_full == agent.access.sync_status.last_full
    quick = fm.requests[before:]
    assert any("created_after=" in p for p in quick), quick
    assert any("/users?" in p and "user_id" in p for p in quick), quick
    assert agent.access.directory.member("1800").trainings.keys() == {"fdm-printer"}
    assert agent.access.directory.member("1745").trainings.keys() == {"fdm-printer"}
    assert [b.member_id for b in agent.access.directory.bookings("printer-1", hours(2.1), hours(2.2))] == ["1800"]
    assert agent.access.directory.meta()["source"] == "fab-manager"


def test_failed_pull_keeps_the_cache_and_says_so(lab):
    agent = lab()
    first_pull(agent)
    fm = lab.fm
    fm.down = True
    url = f"http://127.0.0.1:{agent.api.port}"
    cli = [sys.executable, "-m", "afn_agent", "directory", "sync", "--url", url, "--key", KEYS["manager"]]
    failed = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "cached directory stays in force" in failed.stderr, failed.stderr
    assert "HTTP 500" in failed.stderr
    health = httpx.get(f"{url}/health").json()["directory"]
    assert health["ok"] is False and health["failures"] >= 1 and health["failing_since"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'afn_directory_sync_ok{source="fab-manager"} 0.0' in metrics
    rows = agent.ledger.audit_log(None, 200)
    assert any(r["action"] == "directory-sync-failed" and "HTTP 500" in r["detail_json"] for r in rows)
    assert any(r["action"] == "api:directory-sync" and r["result"] == "failed" for r in rows)
    assert read_badge(agent, ANA)["result"] == "allowed", "the cached directory decides meanwhile"

    fm.down = False
    fm.fail_next, fm.retry_after = 2, "0"  # two 503s, then answers: retried within the pull
    ok = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    status = json.loads(ok.stdout)
    assert status["ok"] and status["failures"] == 0 and status["error"] is None
    assert 'afn_directory_sync_ok{source="fab-manager"} 1.0' in httpx.get(f"{url}/metrics").text
    denied = subprocess.run([*cli[:-1], KEYS["slicer"]], capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "HTTP 403" in denied.stderr


def test_a_wrong_token_is_said_and_nothing_is_cached(lab):
    agent = lab(token="not-the-token-at-all")
    from tests.helpers import wait_for

    wait_for(lambda: agent.access.sync_status.failures >= 1, 15, "the first pull's failure")
    status = agent.access.sync_status
    assert "refused the token (401)" in status.error and status.ok is False
    assert agent.access.directory.meta() is None
    assert len(lab.fm.requests) == 1, "a 401 is not retried"


def test_config_cross_checks(tmp_path):
    path = write_config(tmp_path / "agent.toml", [{"id": "printer-1", "class": "fdm-printer", "profile": "marlin2",
                                                   "port": "/dev/null", "reader": "sim"}])  # fmt: skip
    path.write_text(path.read_text() + f"""
[access]
badge_secret = "{SECRET}"
sync_url = "http://127.0.0.1:1/directory"

[directory]
source = "fab-manager"
url = "http://127.0.0.1:1"
token = "tok-0123456789"
machines = {{ imprimante-3d = "printer-9" }}
trainings = {{ 1 = "fdm-printr" }}
""")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    said = str(err.value)
    assert "sync_url" in said and "keep one" in said
    assert "no machine 'printer-9'" in said
    assert "no machine of class 'fdm-printr' (classes: fdm-printer)" in said
