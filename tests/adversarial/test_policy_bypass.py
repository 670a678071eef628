"""Issue 15, ninth class: policy bypasses. Marlin dispatches on a command's number (`M502.1` runs M502,
real 2.1.2 shown in test_conformance), reads `Xinf` with strtof, and clamps targets only at MAXTEMP; each
spelling of a forbidden command, heat above the profile's limit and every non-finite number is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.analyzer import analyzer_for
from afn_agent.gcode.lexer import lex
from afn_agent.gcode.policy import Policy
from afn_agent.intake import JobRefused, submit
from afn_agent.sim.jobs import circle_gcode

MARLIN = load_profile("marlin2")


def refusals(text: str, profile=MARLIN) -> list[dict]:
    a = analyzer_for(profile)
    for line in text.splitlines():
        a.feed_line(line)
    return a.result().policy_violations


def spell(code: str, zeros: int, subcode: str, case: str, gap: str, numbered: bool) -> str:
    letter, number = code[0], code[1:]
    word = f"{letter}{gap}{'0' * zeros}{number}{subcode}"
    word = word.lower() if case == "lower" else word
    line = f"{word} ; a comment"
    return f"N7 {line}" if numbered else line


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(["M502", "M92", "M500", "M303", "M211", "M206", "M23", "M24", "M32", "M302"]),
    zeros=st.integers(0, 3),
    subcode=st.sampled_from(["", ".0", ".1", ".2", ".9", ".10"]),
    case=st.sampled_from(["upper", "lower"]),
    gap=st.sampled_from(["", " "]),
    numbered=st.booleans(),
)
def test_every_spelling_of_a_forbidden_number_is_refused(code, zeros, subcode, case, gap, numbered):
    line = spell(code, zeros, subcode, case, gap, numbered)
    got = refusals(f"G28\n{line}\nG1 X10 Y10 F600\n")
    assert [v["line"] for v in got] == [2], line


def test_a_rule_with_a_subcode_forbids_only_that_subcode():
    pol = Policy(("G38.2", "M42 I"), "grbl")
    lines = ["G38.2 Z-5", "G38.3 Z-5", "G38 Z-5", "M42 P13 S255 I", "M42 P13 S255 I0", "M42 P13 S255"]
    for i, line in enumerate(lines, 1):
        pol.check(lex(line, i), line)
    assert [v.line for v in pol.violations] == [1, 4, 5]


@settings(max_examples=300, deadline=None)
@given(
    command=st.sampled_from(["M104", "M109", "M140", "M190"]),
    word=st.sampled_from(["S", "R"]),
    over=st.floats(0.001, 5000, allow_nan=False),
    form=st.sampled_from(["{w}{v}", "{w} {v}", "{w}+{v}", "T0 {w}{v}", "{w}{v} T1"]),
)
def test_heat_above_the_profile_limit_is_refused_and_at_the_limit_is_not(command, word, over, form):
    limit = MARLIN.max_temp_c["hotend" if command in ("M104", "M109") else "bed"]
    value = f"{limit + over:.3f}"
    assert float(value) > limit
    hot = f"{command} " + form.format(w=word, v=value)
    ok = f"{command} " + form.format(w=word, v=f"{limit:g}")
    got = refusals(f"G28\n{ok}\n{hot}\n")
    assert [v["line"] for v in got] == [3], (hot, got)
    assert "above" in got[0]["rule"]


@settings(max_examples=200, deadline=None)
@given(
    axis=st.sampled_from(list("XYZEFIJSR")),
    value=st.sampled_from(["inf", "INF", "-inf", "+Inf", "nan", "NaN", " nan", "infinity", "-NAN"]),
    command=st.sampled_from(["G1", "G0", "G2", "M104", "G92"]),
)
def test_non_finite_numbers_are_refused(axis, value, command):
    got = refusals(f"G28\nG1 X10 Y10 F600\n{command} {axis}{value}\n")
    assert [(v["line"], v["rule"]) for v in got] == [(3, "non-finite number")]


def test_klipper_heater_targets_and_non_finite_arguments():
    got = refusals(
        "SET_HEATER_TEMPERATURE HEATER=extruder TARGET=200\n"
        "SET_HEATER_TEMPERATURE HEATER=extruder TARGET=400\n"
        "SET_HEATER_TEMPERATURE HEATER=heater_bed TARGET=150\n"
        "SET_VELOCITY_LIMIT VELOCITY=inf\n"
    )
    assert [v["line"] for v in got] == [2, 3, 4]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"G28\nM502.1\n", "M502"),
        (b"G28\nM92.1 X200\n", "M92"),
        (b"G28\nM42 P13 S255 I1\n", "M42 I"),
        (b"G28\nM104 S450\n", "hotend above 260"),
        (b"G28\nM140 S200\n", "bed above 140"),
        (b"G28\nG1 Xinf F3000\n", "non-finite"),
        (b"G28\nG1 XNaN F3000\n", "non-finite"),
        (b"G28\nM211 S0\nM206 X-500\n", "M211"),
        (b"G28\nM23 evil.gco\nM24\n", "M23"),
        (b"G28\nM32 P !evil.gco#\n", "M32"),
    ],
)
def test_the_spool_refuses_each_bypass_and_keeps_nothing(one_machine, tmp_path, body, problem):
    agent, _sim = one_machine("m1")
    path = circle_gcode(tmp_path / "c.gcode", 50, centre=(110, 110))
    path.write_bytes(body + path.read_bytes())
    with pytest.raises(JobRefused) as refused:
        submit(agent.config, agent.ledger, "m1", path, "upload", held=True)
    assert problem in str(refused.value) and "line 2" in str(refused.value)
    assert agent.ledger.jobs() == []
    assert not any(agent.config.spool_dir.iterdir())


@pytest.mark.parametrize(
    ("declared", "target", "refused"),
    [
        ("; filament_type = PLA", 250, True),
        ("; filament_type = PLA", 215, False),
        ("; filament_type = PETG", 250, False),
        ("; filament_type = PLA;PETG", 250, False),  # two tools: the highest limit of the two
        (";   printMaterial,PLA", 240, True),  # Simplify3D
        ("", 250, False),  # nothing declared: the hotend's own limit only
    ],
)
def test_heat_above_what_the_declared_filament_takes(declared, target, refused):
    # slicers write the filament at the end as often as at the start: here it comes last
    got = refusals(f"G28\nM104 S{target}\nG1 X10 Y10 F600\n{declared}\n")
    assert bool(got) == refused, got
    if refused:
        assert got[0]["line"] == 2 and "for PLA" in got[0]["rule"]
