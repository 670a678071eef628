"""What the browser tests share: headless Chromium (Debian's, driven by Playwright), axe-core run in the
page, and signing in to the fleet dashboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AXE = ROOT / ".cache" / "node" / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """async () => {
  const r = await axe.run(document, {resultTypes: ["violations"]});
  return r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => v.id + ": " + v.nodes.map(n => n.target.join(" ")).join(", "));
}"""
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def need_browser(axe: bool = False) -> None:
    """Fail (never skip) without what dev-setup.sh installs: CI must run these."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/dev-setup.sh installs it)")
    if axe and not AXE.exists():
        pytest.fail(f"axe-core is not installed at {AXE} (deploy/dev-setup.sh installs it with npm)")


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


def axe_problems(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    return page.evaluate(AXE_RUN)


def sign_in(page, port: int, name: str = "max", key: str = "max-key", lang: str = "en") -> None:
    """A manager signs in on the fleet dashboard's page (which then reloads as theirs)."""
    page.goto(f"http://127.0.0.1:{port}/?lang={lang}")
    page.fill("#login-name", name)
    page.fill("#login-key", key)
    page.click("#login button")
    page.wait_for_selector("#manager:not(.hidden)")
