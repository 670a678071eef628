"""The `afn-agent` command as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

AGENT = [sys.executable, "-m", "afn_agent"]


def run(*args, timeout=120):
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout)


def test_stream_json_reports_the_run(start_sim, circle):
    sim = start_sim("marlin", corrupt=0.02, seed=11)
    path = circle(600)
    p = run(
        "stream", str(path), "--port", str(sim.link), "--profile", "marlin2", "--baud", "250000", "--json"
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["outcome"] == "completed" and out["lines"] == 606 and out["resends"] > 0
    for key in (
        "lines",
        "bytes",
        "seconds",
        "resends",
        "errors",
        "outcome",
        "lines_per_s",
        "link_utilisation",
    ):
        assert key in out


def test_stream_fault_exits_non_zero_with_a_sentence(start_sim, circle):
    sim = start_sim("marlin", thermal_runaway_at=100)
    p = run("stream", str(circle(600)), "--port", str(sim.link), "--profile", "marlin2", "--baud", "250000")
    assert p.returncode == 1
    assert "failed: Thermal Runaway, system stopped! Heater_ID: 0 - after" in p.stderr


def test_stream_names_bad_arguments(tmp_path, circle):
    p = run("stream", str(circle(10)), "--port", "/dev/null-nope", "--profile", "marlin3")
    assert p.returncode == 2 and "unknown profile 'marlin3'" in p.stderr
    p = run("stream", str(tmp_path / "missing.gcode"), "--port", "/dev/x", "--profile", "marlin2")
    assert p.returncode == 2 and "missing.gcode: no such file" in p.stderr
    p = run("stream", str(circle(10)), "--port", str(tmp_path / "ttyNONE"), "--profile", "marlin2")
    assert p.returncode == 3 and "cannot open" in p.stderr and "ttyNONE" in p.stderr


def test_sim_command_runs_a_firmware_on_its_own(tmp_path, circle):
    link = tmp_path / "grbl.tty"
    stats = tmp_path / "stats.json"
    sim = subprocess.Popen(
        [*AGENT, "sim", "grbl", "--link", str(link), "--baud", "250000", "--stats", str(stats)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        p = run(
            "stream",
            str(circle(300, flavour="grbl")),
            "--port",
            str(link),
            "--profile",
            "grbl-1.1",
            "--baud",
            "250000",
            "--json",
        )
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["outcome"] == "completed"
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(10)
    assert json.loads(stats.read_text())["bytes_dropped"] == 0


def test_profiles_lists_all_shipped(tmp_path):
    p = run("profiles")
    assert p.returncode == 0
    for name in ("marlin2", "prusa-mk3", "reprapfirmware", "smoothieware", "grbl-1.1", "grblhal", "fluidnc"):
        assert name in p.stdout
    listed = json.loads(run("profiles", "--json").stdout)
    assert {p["name"]: p["protocol"] for p in listed}["grbl-1.1"] == "grbl" and all(
        "error" not in p for p in listed
    )
    ports = run("ports", "--json")
    assert ports.returncode == 0 and isinstance(json.loads(ports.stdout), list)


def check_bills(demo: dict) -> None:
    """Each bill against the analyzer's figures for its job and the tariff it names; no raw badge UID anywhere."""
    from pathlib import Path

    from afn_agent.demo import MEMBERS
    from afn_agent.firmware.profile import load_profile
    from afn_agent.gcode.analyzer import analyze_path
    from afn_agent.ledger.usage import reprice

    records = {(r["member_id"], r["machine"]["id"], r["job"]["outcome"]): r for r in demo["records"]}
    assert set(records) == {("ana", "printer-1", "completed"), ("eve", "mill-1", "completed"),
                            ("lea", "laser-1", "completed"), ("ana", "printer-1", "cancelled"),
                            ("lea", "printer-2", "failed")}  # fmt: skip
    work = Path(demo["work"])
    for (_member, machine, outcome), r in records.items():
        assert r["price"] == reprice(r), "every price reproducible from its own record"
        profile = {
            "printer-1": "marlin2",
            "printer-2": "marlin2",
            "mill-1": "grbl-1.1",
            "laser-1": "fluidnc",
        }[machine]
        if outcome == "completed":
            a = analyze_path(work / r["job"]["name"], load_profile(profile))
            assert r["material_total"]["mm"] == pytest.approx(a.material_mm, abs=1e-3)
            assert r["beam_on_s"] == pytest.approx(a.beam_on_s, rel=0.02, abs=0.05)
            assert r["spindle_on_s"] == pytest.approx(a.spindle_on_s, rel=0.02, abs=0.05)
    laser = records[("lea", "laser-1", "completed")]
    assert laser["beam_on_s"] > 0 and laser["tariff"]["per_beam_minute"] == "0.8"
    assert laser["billing"]["quantities"]["beam_min"] == f"{laser['beam_on_s'] / 60:.4f}"
    assert records[("eve", "mill-1", "completed")]["supervisor_id"] == "tom"
    assert records[("lea", "printer-2", "failed")]["job"]["stop_type"] == "fault"
    assert records[("lea", "printer-2", "failed")]["price"] == "0.00", "machine faults are free by the tariff"
    assert records[("ana", "printer-1", "cancelled")]["job"]["stop_type"] == "cancelled"
    raw = [uid.encode() for uid in MEMBERS]
    stored = b"".join(f.read_bytes() for f in work.rglob("ledger.sqlite3*"))
    traffic = "\n".join(demo["traffic"]).encode()
    assert len(demo["traffic"]) > 20
    for uid in raw:
        assert uid not in stored and uid not in traffic, "no raw badge UID in the ledgers or on MQTT"


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "afn-agent")
    assert os.path.exists(exe), "pip install -e . installs the afn-agent command"


DATA = os.path.join(os.path.dirname(__file__), "..", "data", "corpus")


def test_analyze_json_has_the_promised_fields():
    p = run(
        "analyze", os.path.join(DATA, "prusaslicer-2.6.1_benchy.gcode"), "--profile", "prusa-mk3", "--json"
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    for key in (
        "material_mm",
        "material_g",
        "estimated_s",
        "bounds",
        "beam_on_s",
        "spindle_on_s",
        "lines",
        "warnings",
        "policy_violations",
    ):
        assert key in out
    assert out["producer_count_mm"] == 4282.06 and out["lines"] == 89383
    # its start G-code extrudes an 18 mm intro line, then sets M221 S95: the rest is pushed at 95 %
    assert (
        out["material_mm"]["total"]
        == round(18 + (4282.06 - 18) * 0.95, 2)
        == out["material_mm"]["per_tool"]["0"]
    )


def test_analyze_refuses_a_job_that_does_not_fit_or_breaks_policy(tmp_path):
    f = tmp_path / "bad.gcode"
    f.write_text("G28\nM83\nG1 X10 Y10 E1 F1200\nM502\nG1 X400 Y10 E1\n")
    p = run("analyze", str(f), "--profile", "marlin2")
    assert p.returncode == 4
    assert "FORBIDDEN line 4: M502" in p.stdout
    assert "X goes from 10 to 400 mm; the machine reaches 0 to 220" in p.stderr
    ok = tmp_path / "ok.gcode"
    ok.write_text("G28\nM83\nG1 X10 Y10 E1 F1200\n")
    assert run("analyze", str(ok), "--profile", "marlin2").returncode == 0


def test_analyze_names_a_missing_file_and_a_bad_profile(tmp_path):
    p = run("analyze", str(tmp_path / "nope.gcode"))
    assert p.returncode == 2 and "nope.gcode: no such file" in p.stderr
    p = run("analyze", os.path.join(DATA, "kirimoto-3.0.gcode"), "--profile", "nosuch")
    assert p.returncode == 2 and "unknown profile 'nosuch'" in p.stderr


def test_a_long_analysis_shows_a_bar_on_a_terminal_only(tmp_path):
    """analyze on a big file was silent for 13 s here (a minute on a Pi): a bar on a terminal, never in a
    script's output; the figures are the same either way."""
    big = tmp_path / "big.gcode"
    big.write_bytes(b"G28\nG92 E0\n" + b"G1 X10 Y10 E0.1 F3000\nG1 X20 Y20 E0.2\n" * 700_000)  # 26 MB
    plain = run("analyze", str(big), "--json")
    assert plain.returncode == 0 and plain.stderr == ""
    done, shown = on_a_terminal("analyze", str(big), "--json")
    assert done.returncode == 0 and b"analysing" in shown
    assert json.loads(done.stdout) == json.loads(plain.stdout)


def on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run the command with its stderr on a pseudo-terminal (as in a shell); what that terminal showed."""
    import pty

    leader, follower = pty.openpty()
    done = subprocess.run([*AGENT, *args], stdout=subprocess.PIPE, stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return done, shown


def test_stream_shows_a_bar_on_a_terminal(start_sim, circle):
    sim = start_sim("marlin")
    done, shown = on_a_terminal("stream", str(circle(400)), "--port", str(sim.link), "--profile", "marlin2",
                                "--baud", "250000")  # fmt: skip
    assert done.returncode == 0 and b"lines, 0 resends" in shown and b"100%" in shown
