"""Issue 18: the machine console in real headless Chromium at 800x480, in French and in English side by side
(two screens on the same machine), against simulated machines whose execution logs are the truth:

- mill: badge -> jog -> zero X/Y -> probe Z -> frame -> a file with `T2 M6` -> tool-change prompt ->
  re-probe -> continue -> summary with spindle time;
- laser: badge -> frame (beam off) -> run -> beam time live and in the summary;
- printer: badge -> load refused cold (the reason in each screen's language) -> preheat -> a PrusaSlicer file with an M600 colour change -> prompt -> continue ->
  summary with grams and the file's own thumbnail.

At every state both screens are photographed (tests/artifacts/console/) and checked with axe-core (no
serious or critical violation) and for touch targets under 44 px. A tablet paired with a one-time code drives its machine from 127.0.0.2.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from afn_agent.agent import Agent
from afn_agent.config import load_config
from afn_agent.intake import submit
from tests.browser import AXE, AXE_RUN
from tests.helpers import KEYS, api_table, grbl_at_rest, profile_file, wait_for, write_config
from tests.integration.test_access import SECRET, UIDS, day, snapshot

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BENCHY = ROOT.parent / "shared" / "corpus" / "prusaslicer-2.6.1_benchy.gcode"
TRAINED = {"trainings": [{"class": c, "expires": day(365)} for c in ("cnc-mill", "laser", "fdm-printer")]}
SMALL_TARGETS = """() => [...document.querySelectorAll("button, select, input:not([type=checkbox]), label.check")]
  .filter(e => e.offsetParent !== null)
  .map(e => [e.id || e.textContent.trim().slice(0, 20), e.getBoundingClientRect()])
  .filter(([, r]) => r.width < 44 || r.height < 44)
  .map(([name, r]) => name + " " + Math.round(r.width) + "x" + Math.round(r.height))"""

MILL_JOB = """G21 G90
M3 S12000
G0 Z5
G0 X0 Y0
G1 Z-1 F200
G1 X20 F600
G1 Y10
G0 Z5
M5
(6 mm end mill)
T2 M6
M3 S12000
G0 X0 Y0
G1 Z-1 F200
G1 X10 F600
G0 Z5
M5
"""


def laser_job(path: Path) -> Path:
    lines = ["G21 G90", "M4 S600"]
    for i in range(200):
        lines += [f"G1 X{10 + i % 2 * 5} Y{i * 0.1:.1f} F3000"]
    path.write_text("\n".join([*lines, "M5", ""]))
    return path


def printer_job(path: Path) -> Path:
    """Real PrusaSlicer 2.6.1 output (its header, thumbnails and first layers) with a colour change in it, as
    PrusaSlicer writes one: a `;COLOR_CHANGE` comment, then M600."""
    lines = BENCHY.read_text().splitlines()
    body = [*lines[:900], ";COLOR_CHANGE,T0,#E03030", "M600", *lines[900:2200], *lines[-120:]]
    path.write_text("\n".join(body) + "\n")
    return path


@pytest.fixture
def lab(tmp_path, start_sim):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/dev-setup.sh installs it)")
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed at {AXE} (deploy/dev-setup.sh installs it with npm)")
    from playwright.sync_api import sync_playwright

    sims = {"mill-1": start_sim("grbl", plate=True, plate_z=-60.0),
            "laser-1": start_sim("grbl", rx_buffer=256, planner_blocks=35, variant="fluidnc", move_ms=25.0),
            "printer-1": start_sim("marlin", speed=10, move_ms=0.5)}  # fmt: skip
    common = {"reader": "sim", "start_on_badge": False, "hold_uploads": True}
    machines = [
        {"id": "mill-1", "class": "cnc-mill", "profile": "grbl-1.1", "tariff": "printer",
         "console": {"plate_mm": 15, "probe_depth": 80, "tool_change": {"X": -5, "Y": -5}, "jog_steps": [1, 10]}},
        {"id": "laser-1", "class": "laser", "profile": "fluidnc", "tariff": "laser", "console": {"language": "en"}},
        {"id": "printer-1", "class": "fdm-printer", "tariff": "printer",
         "profile": profile_file(tmp_path, "marlin2", volume={"y": [-4, 210]})},  # an MK3's intro line
    ]  # fmt: skip
    for m in machines:
        m.update(common, port=str(sims[m["id"]].link), baud=sims[m["id"]].options["baud"])
    path = write_config(tmp_path / "agent.toml", machines)
    path.write_text(path.read_text() + api_table() + f'\n[access]\nbadge_secret = "{SECRET}"\ndebounce_s = 0.2\n')
    agent = Agent(load_config(path)).start()
    agent.access.directory.apply_snapshot(snapshot(ana=TRAINED), "test")
    for mid in sims:
        assert agent.machines[mid].wait_ready(15), mid
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
        yield agent, sims, browser
        browser.close()
    agent.stop()


class Screens:
    """The French and the English screen of one machine; `state` photographs and checks both."""

    def __init__(self, agent, browser, machine: str, host: str = "127.0.0.1") -> None:
        self.machine, self.n, self.problems = machine, 0, []
        self.pages = {}
        for lang in ("fr", "en"):
            page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
            page.on("dialog", lambda d: d.accept())
            page.goto(f"http://{host}:{agent.api.port}/kiosk/{machine}?lang={lang}")
            page.wait_for_selector(f"#machine:has-text('{machine}')")
            page.add_script_tag(path=str(AXE))
            self.pages[lang] = page

    def __getitem__(self, lang: str):
        return self.pages[lang]

    def state(self, name: str, selector: str) -> None:
        self.n += 1
        for lang, page in self.pages.items():
            page.wait_for_selector(selector, timeout=30_000)
            page.wait_for_timeout(400)  # real time: the next SSE frames settle (progress, figures)
            page.screenshot(path=str(ARTIFACTS / f"{self.machine}-{self.n}-{name}-{lang}.png"), full_page=True)
            found = page.evaluate(AXE_RUN)
            self.problems += [f"{name} ({lang}): {v}" for v in found]
            self.problems += [f"{name} ({lang}): touch target under 44 px: {t}" for t in page.evaluate(SMALL_TARGETS)]


def badge(agent, machine: str) -> None:
    agent.access.sim_reader(machine).present(UIDS["ana"])
    wait_for(lambda: (s := agent.access.sessions.current(machine)) and s["member_id"] == "ana", 10, "session")


def ran(sim) -> list[str]:
    return [f"{label}\t{cmd.replace(' ', '') if label != 'rt' else cmd}" for label, cmd in sim.executed()]


def at_rest(agent, machine: str) -> None:
    grbl_at_rest(agent.machines[machine], 20)


def tap(page, selector: str, agent, machine: str, sim, line: str, times: int = 1) -> None:
    """Tap a console button and wait until what it sends has run on the machine (`times`: the line's
    count in the log by then): the page's request is asynchronous, and the next tap must not overtake it."""
    page.click(selector)
    wait_for(lambda: ran(sim).count(line) >= times, 20, f"{line!r} on the machine")
    at_rest(agent, machine)


def test_mill_set_up_tool_change_and_summary(lab, tmp_path):
    agent, sims, browser = lab
    sim, s = sims["mill-1"], Screens(agent, browser, "mill-1")
    fr = s["fr"]
    s.state("badge-in", "#badge-in:not(.hidden)")
    badge(agent, "mill-1")
    job = tmp_path / "plaque.nc"
    job.write_text(MILL_JOB)
    submit(agent.config, agent.ledger, "mill-1", job, "upload", member_id="ana")
    s.state("set-up", "#setup:not(.hidden) #zero-xy")
    assert fr.inner_text("#setup-title") == "Préparation" and s["en"].inner_text("#setup-title") == "Set-up"
    fr.select_option("#step", "10")
    at_rest(agent, "mill-1")
    tap(fr, ".jog-btn[data-axis='X'][data-dir='-1']", agent, "mill-1", sim, "$\t$J=G91G21X-10F1000")
    tap(fr, ".jog-btn[data-axis='Y'][data-dir='-1']", agent, "mill-1", sim, "$\t$J=G91G21Y-10F1000")
    tap(fr, "#zero-xy", agent, "mill-1", sim, "-\tG10L20P1X0Y0")
    wait_for(lambda: agent.machines["mill-1"].work_offset.get("Y") == -10.0, 10, "work zero X/Y")
    tap(fr, "#probe", agent, "mill-1", sim, "-\tG90G0Z20")
    s.state("probed", "#probe-result:not(:empty)")
    assert "15" in fr.inner_text("#probe-result")
    tap(fr, "#frame", agent, "mill-1", sim, "-\tG0X0Y10")
    fr.click("#queue button.start")
    s.state("tool-change", "#prompt-box:not(.hidden)")
    assert "outil 2" in fr.inner_text("#prompt-title") and "tool 2" in s["en"].inner_text("#prompt-title")
    assert fr.inner_text("#prompt-text") == "6 mm end mill"
    at_rest(agent, "mill-1")
    tap(fr, "#probe", agent, "mill-1", sim, "-\tG90G0Z20", times=2)  # the new tool: Z zero again on the plate
    fr.click("#continue")
    s.state("summary", "#summary:not(.hidden) #summary-machine:not(:empty)")
    assert fr.inner_text("#summary-outcome") == "Terminé" and s["en"].inner_text("#summary-outcome") == "Finished"
    assert "€" in fr.inner_text("#summary-price") and "," in fr.inner_text("#summary-price")
    log = ran(sim)
    for want in ("$\t$J=G91G21X-10F1000", "$\t$J=G91G21Y-10F1000", "-\tG10L20P1X0Y0", "-\tG90G38.2Z-80F50",
                 "-\tG10L20P1Z15", "-\tG53G0Z-1", "-\tG0X20Y0", "-\tG53G0X-5Y-5"):  # fmt: skip
        assert want in log, (want, log)
    assert log.count("-\tG10L20P1Z15") == 2, "probed before the job and again at the tool change"
    assert not any("M6" in line for line in log)
    assert not s.problems, s.problems


def test_laser_frame_beam_off_and_beam_time(lab, tmp_path):
    agent, sims, browser = lab
    sim, s = sims["laser-1"], Screens(agent, browser, "laser-1")
    en = s["en"]
    badge(agent, "laser-1")
    submit(agent.config, agent.ledger, "laser-1", laser_job(tmp_path / "engrave.gcode"), "upload", member_id="ana")
    s.state("set-up", "#setup:not(.hidden) #frame:not(.hidden)")
    assert not en.is_visible("#probe"), "a laser has no touch plate"
    mark = len(sim.executed())
    at_rest(agent, "laser-1")
    tap(en, "#frame", agent, "laser-1", sim, "-\tG0X10Y0")
    framed = ran(sim)[mark:]
    assert not any(line.startswith(("-\tM3", "-\tM4")) for line in framed), framed  # beam off
    assert "-\tM5" in framed and not any("Z" in line for line in framed), framed  # a laser's focus stays
    en.click("#queue button.start")
    s.state("running", "#running:not(.hidden) #machine-time-fig:not(.hidden)")
    assert en.inner_text("#machine-time-label") == "Beam on" and s["fr"].inner_text("#machine-time-label") == (
        "Faisceau allumé")
    s.state("summary", "#summary:not(.hidden) #summary-machine:not(:empty)")
    assert en.inner_text("#summary-machine-label") == "Beam on"
    assert en.inner_text("#summary-machine") != "0 min 00 s"
    agent.pump.raise_alarm("laser-1", "interlock-open", {"reason": "lid open"})  # the lid, opened now
    s.state("alarm", "#alarms:not(.hidden) #alarm-list li")
    assert "capot" in s["fr"].inner_text("#alarm-list") and "lid" in en.inner_text("#alarm-list")
    en.click("#clear-alarms")
    en.wait_for_selector("#alarms", state="hidden")
    assert not s.problems, s.problems


def test_printer_preheat_colour_change_and_summary(lab, tmp_path):
    agent, sims, browser = lab
    sim, s = sims["printer-1"], Screens(agent, browser, "printer-1")
    fr = s["fr"]
    badge(agent, "printer-1")
    s.state("set-up", "#printer-tools:not(.hidden)")
    fr.select_option("#material", "PLA")
    wait_for(lambda: agent.control.status("printer-1")["material"] == "PLA", 5, "PLA loaded")
    fr.wait_for_selector("#temp-list li")
    for page in s.pages.values():
        page.click("#load")  # cold: the agent refuses, each screen gives the reason in its language
    s.state("refused", "#error:not(.hidden)")
    assert fr.inner_text("#error").startswith("La buse est à "), fr.inner_text("#error")
    assert s["en"].inner_text("#error").startswith("The nozzle is at "), s["en"].inner_text("#error")
    assert not any(line.startswith("-\tG1E") for line in ran(sim)), "nothing extruded cold"
    fr.click("#preheat")
    s.state("preheat", "#temp-list li:has-text('/ 210 °C')")
    assert not fr.is_visible("#error"), "the next action taken clears the refusal"
    assert fr.inner_text("#temps-title") == "Températures"
    submit(agent.config, agent.ledger, "printer-1", printer_job(tmp_path / "benchy.gcode"), "upload",
           member_id="ana")  # fmt: skip
    fr.wait_for_selector("#queue li img.thumb")  # the slicer's own picture, read at upload
    fr.click("#queue button.start")
    s.state("colour-change", "#prompt-box:not(.hidden)")
    assert "filament" in fr.inner_text("#prompt-title").lower()
    assert fr.inner_text("#prompt-text") == "COLOR_CHANGE,T0,#E03030"
    fr.click("#continue")
    s.state("summary", "#summary:not(.hidden) #summary-thumb:not(.hidden)")
    assert fr.inner_text("#summary-material").endswith(" g") and fr.inner_text("#summary-material") != "0.0 g"
    picture = httpx.get(f"http://127.0.0.1:{agent.api.port}" + fr.get_attribute("#summary-thumb", "src"))
    assert picture.headers["content-type"] == "image/png" and picture.content.startswith(b"\x89PNG")
    assert ran(sim).count("rt\tM108 (wait for user ended)") == 1
    assert not s.problems, s.problems


@pytest.fixture
def tablet_address(lab):
    """http://127.0.0.2:<port>, whose connections reach the agent from 127.0.0.2: Linux would give a
    browser's connection to 127.0.0.2 the source 127.0.0.1 (the loopback route's), so socat forwards them
    from that address, as from a tablet on the lab's network."""
    agent = lab[0]
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.2,fork,reuseaddr",
                             f"TCP:127.0.0.1:{agent.api.port},bind=127.0.0.2"])  # fmt: skip
    wait_for(lambda: _listening("127.0.0.2", port), 5, "the forwarder")
    yield f"http://127.0.0.2:{port}"
    proc.terminate()
    proc.wait(5)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def test_a_paired_tablet_drives_its_machine_and_nothing_else(lab, tablet_address):
    agent, sims, browser = lab
    url, tablet = f"http://127.0.0.1:{agent.api.port}", tablet_address
    local = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=local) as other:
        assert other.get(f"{tablet}/v1/kiosk/mill-1").status_code == 401  # not this host: no console
    code = httpx.post(f"{url}/v1/machines/mill-1/pairing-code", headers={"X-Api-Key": KEYS["manager"]}).json()
    page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
    page.goto(f"{tablet}/kiosk/mill-1?lang=fr")
    page.wait_for_selector("#pairing:not(.hidden) #pair-send:has-text('Appairer')")
    page.screenshot(path=str(ARTIFACTS / "tablet-1-pairing-fr.png"))
    page.add_script_tag(path=str(AXE))
    assert page.evaluate(AXE_RUN) == [] and page.evaluate(SMALL_TARGETS) == []
    page.fill("#pair-code", code["code"])
    page.click("#pair-send")
    page.wait_for_selector("#badge-in:not(.hidden)")
    key = page.evaluate("localStorage.getItem('afn-screen:mill-1')")
    rows = [r for r in agent.ledger.audit_log("mill-1", 50) if r["action"] == "pair"]
    assert rows and rows[0]["actor"] == "screen:127.0.0.2", rows
    badge(agent, "mill-1")
    page.wait_for_selector("#setup:not(.hidden) #zero-xy")
    page.screenshot(path=str(ARTIFACTS / "tablet-2-console-fr.png"))
    at_rest(agent, "mill-1")
    page.select_option("#step", "1")
    tap(page, ".jog-btn[data-axis='Z'][data-dir='-1']", agent, "mill-1", sims["mill-1"], "$\t$J=G91G21Z-1F300")
    with httpx.Client(transport=local, headers={"Authorization": f"Bearer {key}"}) as paired:
        assert paired.get(f"{tablet}/v1/kiosk/printer-1").status_code == 403  # another machine's console
        r = paired.post(f"{tablet}/v1/machines/printer-1/console/preheat", json={"hotend": 200, "bed": 60})
        assert r.status_code == 403
        assert paired.post(f"{tablet}/v1/pair", json={"code": code["code"]}).status_code == 403  # used once
        assert paired.get(f"{tablet}/v1/kiosk/mill-1").status_code == 200
        key_id = next(k["id"] for k in agent.keys.list() if k["role"] == "kiosk")
        assert httpx.delete(f"{url}/v1/keys/{key_id}", headers={"X-Api-Key": KEYS["manager"]}).status_code == 204
        assert paired.get(f"{tablet}/v1/kiosk/mill-1").status_code == 403  # revoked: the key is refused
    out = subprocess.run([sys.executable, "-m", "afn_agent", "pair", "--config", str(agent.config.path),
                          "--machine", "laser-1"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    code = out.stdout.split("pairing code for laser-1: ")[1].split()[0]
    with httpx.Client(transport=local) as other:
        new = other.post(f"{tablet}/v1/pair", json={"code": code, "name": "laser tablet"}).json()
        assert new["machine"] == "laser-1"
        assert other.get(f"{tablet}/v1/kiosk/laser-1", headers={"X-Api-Key": new["token"]}).status_code == 200
        wrong = [other.post(f"{tablet}/v1/pair", json={"code": f"{n:06d}"}).status_code for n in range(12)]
        first = wrong.index(429)  # ten wrong codes (the used one above was one): pairing pauses
        assert first == 9 and set(wrong[:first]) == {403} and set(wrong[first:]) == {429}, wrong
    # the fleet dashboard's way: it shows six digits and sends only their hash, in a signed command
    digest = hashlib.sha256(b"424242").hexdigest()
    cmd = {"machine": "mill-1", "actor": "max", "command": "pairing-code", "args": {"code_sha256": digest}}
    assert agent.control.command(cmd) == ("done", "pairing code accepted (ten minutes, once)")
    assert agent.control.command({**cmd, "args": {"code_sha256": "42"}})[0] == "refused"
    assert any(r["action"] == "pairing-code" for r in agent.ledger.audit_log("mill-1", 50))
