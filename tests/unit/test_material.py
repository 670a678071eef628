"""Filament counting rules, one at a time, on small hand-written jobs."""

import pytest

from afn_agent.gcode.analyzer import Analyzer
from afn_agent.gcode.lexer import lex
from afn_agent.gcode.material import grams


def count(text: str) -> Analyzer:
    a = Analyzer("job.gcode")
    for line in text.strip().splitlines():
        a.feed_line(line + "\n")
    return a


def test_refill_after_a_retraction_is_not_counted_absolute():
    a = count("M82\nG92 E0\nG1 X1 E5\nG1 E3\nG1 X2\nG1 E5\nG1 X3 E7")
    assert a.result().material_mm == pytest.approx(7.0)


def test_refill_after_a_retraction_is_not_counted_relative():
    a = count("M83\nG1 X1 E5\nG1 E-2\nG1 E2\nG1 X3 E2")
    assert a.result().material_mm == pytest.approx(7.0)


def test_g92_resets_the_absolute_origin():
    a = count("M82\nG1 X1 E10\nG92 E0\nG1 X2 E4")
    assert a.result().material_mm == pytest.approx(14.0)


def test_g90_sets_e_absolute_again_after_m83_like_marlin():
    a = count("M83\nG1 X1 E1\nG90\nG92 E0\nG1 X2 E3\nG1 X3 E4")
    assert a.result().material_mm == pytest.approx(5.0)


def test_m83_after_g90_keeps_e_relative():
    a = count("G90\nM83\nG1 X1 E1\nG1 X2 E1")
    assert a.result().material_mm == pytest.approx(2.0)


def test_tools_are_counted_apart():
    a = count("M83\nT0\nG1 X1 E2\nT1\nG1 X2 E3\nG1 E-1\nG1 E1\nT0\nG1 X3 E1")
    assert a.result().material_mm_per_tool == {0: pytest.approx(3.0), 1: pytest.approx(3.0)}


def test_arcs_extrude_too():
    a = count("M83\nG2 X10 Y0 I5 J0 E1.5\nG3 X0 Y0 I-5 J0 E1.5")
    assert a.result().material_mm == pytest.approx(3.0)


def test_reprapfirmware_g10_with_p_is_a_temperature_not_a_retraction():
    a = count("M83\nG10 P0 S195 R160\nG1 X1 E2")
    assert a.result().material_mm == pytest.approx(2.0)


def test_firmware_retraction_g10_g11_changes_nothing_counted():
    a = count("M83\nG1 X1 E2\nG10\nG1 X5\nG11\nG1 X6 E1")
    assert a.result().material_mm == pytest.approx(3.0)


def test_relative_e_is_inferred_when_a_file_never_says():
    body = "\n".join(f"G1 X{i} E0.05" for i in range(100))
    a = count("G90\nG1 E-6\nG1 E6\n" + body)
    r = a.result()
    assert r.relative_e_inferred and r.material_mm == pytest.approx(5.0)


def test_declared_absolute_is_never_second_guessed():
    body = "\n".join(f"G1 X{i} E0.05" for i in range(100))
    a = count("M82\n" + body)
    assert not a.result().relative_e_inferred and a.result().material_mm == pytest.approx(0.05)


def test_mass_uses_the_file_header_then_the_defaults():
    a = count("M83\nG1 X1 E1000\n; filament_diameter = 2.85\n; filament_density = 1.04")
    r = a.result()
    assert (r.diameter_mm, r.density_g_cm3) == (2.85, 1.04)
    assert r.material_g == pytest.approx(grams(1000, 2.85, 1.04)) == pytest.approx(6.634, abs=1e-3)
    assert count("M83\nG1 X1 E1000").result().material_g == pytest.approx(2.982, abs=1e-3)


def test_comma_decimals_are_warned_with_their_line():
    r = count("M83\nG1 X1 E1,5").result()
    assert r.material_mm == pytest.approx(1.5) and r.comma_decimals == 1
    assert r.warnings == ["job.gcode:2: number with a decimal comma, read as a decimal point"]


def test_incremental_feed_returns_what_each_line_used():
    a = Analyzer()
    used = [a.feed(lex(x, 1)) for x in ("M83", "G1 X1 E2", "G1 E-1", "G1 E1", "G1 X2 E1")]
    assert used == [0.0, 2.0, 0.0, 0.0, 1.0]  # the refill after a retraction is not counted again
    assert a.material.total_mm() == pytest.approx(3.0)


def test_flow_percentage_changes_what_is_pushed_not_what_slicers_state():
    r = count("M83\nM221 S95\nG1 X1 E100\nT1\nM221 S110 T1\nG1 X2 E10").result()
    assert r.material_mm_per_tool == {0: pytest.approx(95.0), 1: pytest.approx(11.0)}
    assert r.material_mm == pytest.approx(106.0)
    assert r.producer_count_mm == pytest.approx(110.0)


def test_a_tool_beyond_those_counted_is_warned_and_its_filament_kept():
    r = count("M83\nG1 X1 E2\nT99\nG1 X2 E3\nT1\nG1 X3 E4").result()
    assert r.material_mm_per_tool == {0: pytest.approx(5.0), 1: pytest.approx(4.0)}
    assert r.warnings == ["job.gcode: 1 command(s) name a tool beyond T63; its filament is counted on the tool in use before"]
