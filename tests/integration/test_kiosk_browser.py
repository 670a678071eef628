"""The kiosk page in real headless Chromium (Playwright driving /usr/bin/chromium):
badge -> quote -> start -> progress -> done, and a refusal in words. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from afn_agent.sim.jobs import circle_gcode
from tests.helpers import api_table, wait_for, write_config
from tests.integration.test_access import SECRET, UIDS, snapshot

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "kiosk"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def kiosk(tmp_path, start_sim):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/dev-setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    sim = start_sim("marlin", speed=10, move_ms=2.0)
    machine = {"id": "printer-1", "class": "fdm-printer", "profile": "marlin2", "port": str(sim.link),
               "baud": sim.options["baud"], "tariff": "printer", "reader": "sim", "start_on_badge": False}  # fmt: skip
    path = write_config(tmp_path / "agent.toml", [machine])
    path.write_text(
        path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n'
    )
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(), "test")
    assert agent.machines["printer-1"].wait_ready(15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 800, "height": 480})  # a 7-inch touch screen
        page.on("dialog", lambda d: d.accept())
        page.goto(f"http://127.0.0.1:{agent.api.port}/kiosk/printer-1?lang=en")
        yield agent, page
        browser.close()
    agent.stop()


def badge(agent, who: str) -> None:
    agent.access.sim_reader("printer-1").present(UIDS[who])


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_badge_quote_start_progress_done(kiosk, tmp_path):
    agent, page = kiosk
    page.wait_for_selector("#machine:has-text('printer-1')")
    assert page.is_visible("#badge-in")
    shot(page, "1-waiting-for-badge")
    job = circle_gcode(tmp_path / "keychain.gcode", 3000, 0.05, centre=(110, 110))
    submit(agent.config, agent.ledger, "printer-1", job, "upload", member_id="ana")  # a slicer upload, held
    badge(agent, "ana")
    page.wait_for_selector("#who:has-text('At the machine: Ana')")
    page.wait_for_selector("#queue li:has-text('keychain.gcode')")
    quote = page.inner_text("#queue li")
    assert "€" in quote and " g" in quote and "min" in quote
    assert "Welcome, Ana." in page.inner_text("#decision")
    page.select_option("#material", "PETG")  # the member says what is loaded
    wait_for(lambda: agent.control.status("printer-1")["material"] == "PETG", 5, "PETG loaded")
    (row,) = wait_for(lambda: [a for a in agent.ledger.audit_log("printer-1") if a["action"] == "material"], 5,
                      "the material's audit row (written just after the machine's row)")  # fmt: skip
    assert row["actor"] == "session:ana" and row["result"] == "PETG"  # the member, by their session
    page.click("#new-key")  # her own slicer key, shown once, as text and QR
    page.wait_for_selector("#key-qr svg")
    key = page.inner_text("#key-text").strip()
    (made,) = agent.keys.list("ana")
    assert len(key) > 30 and made["created_by"] == "session:ana"
    assert agent.keys.find(hashlib.sha256(key.encode()).hexdigest())["id"] == made["id"], "the key shown works"
    shot(page, "2-quote")
    page.click("#queue button.start")
    page.wait_for_selector("#running:not(.hidden)")
    page.wait_for_function("document.querySelector('#progress').textContent !== '0 %'")
    assert "€" in page.inner_text("#cost")
    shot(page, "3-printing")
    page.wait_for_selector("#running", state="hidden", timeout=60_000)
    shot(page, "4-done")
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["outcome"] == "completed" and rec["member_id"] == "ana"
    audit = [a for a in agent.ledger.audit_log("printer-1", 50) if a["action"] == "job-release"]
    assert audit and audit[0]["actor"] == "session:ana", "the kiosk acted with the member's session token"


def test_refusal_in_words_and_cancel_from_the_screen(kiosk, tmp_path):
    agent, page = kiosk
    page.wait_for_selector("#machine:has-text('printer-1')")
    badge(agent, "bob")
    page.wait_for_selector("#decision:has-text('not trained on this machine')")
    shot(page, "5-refused")
    badge(agent, "ana")
    page.wait_for_selector("#who:has-text('Ana')")
    job = circle_gcode(tmp_path / "long.gcode", 20000, 0.01, centre=(110, 110))
    submit(agent.config, agent.ledger, "printer-1", job, "upload", member_id="ana")
    page.wait_for_selector("#queue button.start")
    page.click("#queue button.start")
    page.wait_for_selector("#pause:not(.hidden)")
    page.click("#pause")
    page.wait_for_selector("#resume:not(.hidden)")
    shot(page, "6-paused")
    page.click("#cancel")  # the confirm dialog is accepted
    page.wait_for_selector("#running", state="hidden", timeout=30_000)
    ((_, rec),) = agent.ledger.usage_after()
    assert rec["job"]["outcome"] == "cancelled" and rec["job"]["stop_type"] == "cancelled"
    assert rec["time_s"]["paused_s"] > 0
