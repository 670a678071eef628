"""`afn-agent demo --keep`: after its scripted afternoon the demo lab goes on living, so a visitor who opens
the fleet dashboard sees it move; `afn-agent badge` holds a card to a simulated reader through the API.

Run as a user would (the README's command), watched in real headless Chromium."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_cli import check_bills

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "demo-keep"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEEP_S = 50
SHOTS, EVERY_S = 4, 10.0


def read_until(proc: subprocess.Popen[str], pattern: str, lines: list[str], timeout: float) -> re.Match[str]:
    """Lines of the demo's output until one matches (they are kept in `lines` for the failure message)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in the demo's output:\n" + "\n".join(lines[-40:]))


def tiles_text(page) -> str:
    return page.evaluate(
        "Array.from(document.querySelectorAll('.tile')).map(t => t.innerText).join('\\n--\\n')"
    )


def test_demo_keeps_living_and_a_card_is_held_from_the_cli(tmp_path):
    """The README's first command (fast): the whole scripted afternoon and every bill checked, then the lab
    lives on: the dashboard moves between screenshots, a card held from the CLI is decided on."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/dev-setup.sh installs it)")
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: the demo's dashboard needs it (deploy/dev-setup.sh)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    bills = tmp_path / "bills.json"
    cmd = [
        sys.executable,
        "-u",
        "-m",
        "afn_agent",
        "demo",
        "--fast",
        "--keep",
        str(KEEP_S),
        "--json",
        str(bills),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        laser = read_until(proc, r"kiosk laser-1\s+(http://\S+)", lines, 60).group(1)
        fleet = read_until(proc, r"fleet dashboard\s+(http://\S+)", lines, 60).group(1)
        badge = read_until(proc, r"^\s+(afn-agent badge .*)$", lines, 240).group(1)
        said = "\n".join(lines)
        for line in ("bob badges at printer-2: not_trained", "eve badges at mill-1: supervisor_required",
                     "tom badges at mill-1: allowed (supervised by tom)", "alarm: Thermal Runaway",
                     "5 records", "every record acknowledged: True"):  # fmt: skip
            assert line in said, line
        check_bills(json.loads(bills.read_text()))
        threading.Thread(
            target=lambda: lines.extend(x.rstrip() for x in proc.stdout or ()), daemon=True
        ).start()
        argv = shlex.split(badge)[1:]
        url, key = argv[argv.index("--url") + 1], argv[argv.index("--key") + 1]

        # bob is not trained on printers: his card is refused, and the play goes on undisturbed
        bob = "0A00B2B2B2"
        argv[1] = bob
        held = subprocess.run([sys.executable, "-m", "afn_agent", *argv], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert held.returncode == 0, held.stderr
        assert "printer-1" in held.stdout
        audit = urllib.request.Request(
            f"{url}/v1/audit?machine=printer-1&limit=200", headers={"X-Api-Key": key}
        )
        deadline = time.monotonic() + 10
        refused: list[dict] = []
        while not refused and time.monotonic() < deadline:
            with urllib.request.urlopen(audit, timeout=5) as answer:
                rows = json.loads(answer.read())
            # not trained, or the machine in use by whoever the play has brought there; never allowed
            refused = [r for r in rows if r["action"] == "badge" and r["actor"] == "bob"]
            time.sleep(0.2)
        assert refused, "bob's card, held from the CLI, was not decided on at printer-1"
        assert refused[0]["result"] in ("not_trained", "booked_by_other"), refused[0]
        assert any(r["action"] == "sim-badge" and r["actor"] == "demo-manager" for r in rows)

        wrong = [*argv[:-1], "not-the-managers-key"]
        denied = subprocess.run([sys.executable, "-m", "afn_agent", *wrong], capture_output=True, text=True,
                                timeout=30)  # fmt: skip
        assert denied.returncode == 1 and "HTTP 403" in denied.stderr, denied.stderr

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(fleet)
            page.wait_for_function("document.querySelectorAll('.tile').length === 4", timeout=15_000)
            kiosk = browser.new_page(viewport={"width": 800, "height": 480})
            kiosk.goto(laser)  # the demo's own address for the laser's kiosk
            seen, screen = [], []
            for n in range(SHOTS):
                if n:
                    time.sleep(EVERY_S)  # real time: the lab lives at its own pace
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{n}.png"))
                kiosk.screenshot(path=str(ARTIFACTS / f"kiosk-laser-1-{n}.png"))
                seen.append(tiles_text(page))
                screen.append(kiosk.evaluate("document.body.innerText"))
            browser.close()
        for before, after in itertools.pairwise(seen):
            assert before != after, f"the dashboard did not move in {EVERY_S:.0f} s:\n{after}"
        assert len(set(screen)) >= SHOTS - 1, f"the laser's kiosk hardly moved: {screen}"
        assert proc.wait(KEEP_S + 60) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    out = "\n".join(lines)
    assert "Traceback" not in out
