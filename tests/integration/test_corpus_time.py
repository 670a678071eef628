"""Estimated time against the producers' own estimates, and laser/spindle figures on CAM files."""

import statistics
from pathlib import Path

import pytest

from afn_agent.firmware.profile import load_profile
from afn_agent.gcode.analyzer import analyze_file, analyze_path
from afn_agent.gcode.producer import stated_time

DATA = Path(__file__).resolve().parents[1] / "data"


PRUSA_FILES = [p for p in sorted((DATA / "corpus").glob("*.gcode")) if stated_time(p)] + sorted(
    (DATA / "sliced").glob("*.gcode")
)


def test_at_least_twenty_self_sliced_files_and_the_corpus_prusaslicer_files():
    assert len(list((DATA / "sliced").glob("*.gcode"))) >= 20
    assert len(PRUSA_FILES) >= 24


def test_time_matches_prusaslicer_normal_mode_median_3_worst_8_percent():
    errors = []
    for path in PRUSA_FILES:
        a = analyze_file(path)
        errors.append(abs((a.moving_s + a.dwell_s) / stated_time(path) - 1))
    assert statistics.median(errors) <= 0.03, errors
    assert max(errors) <= 0.08, errors


def test_laser_beam_time_counts_only_burning_moves_and_weights_power():
    a = analyze_path(DATA / "corpus" / "inkscape-lasertools_trisquel.gcode", load_profile("fluidnc"))
    assert 0 < a.beam_on_s < a.moving_s
    assert a.beam_full_power_s < 0.2 * a.beam_on_s  # most of the beam time is S90 of 1000, or S1
    assert a.spindle_on_s == 0 and a.material_mm == 0


def test_mill_spindle_time_tools_and_cut_vs_rapid():
    a = analyze_path(DATA / "corpus" / "fusion360_grbl_wall.nc", load_profile("grbl-1.1"))
    assert a.spindle_on_s > 0.9 * a.moving_s and a.beam_on_s == 0
    assert a.tools == [1] and a.cutting_mm > a.rapid_mm > 0


def test_inch_file_is_measured_in_mm():
    a = analyze_file(DATA / "corpus" / "mach3_plasma_inch.gcode")
    span = a.bounds_all_moves["X"][1] - a.bounds_all_moves["X"][0]
    assert span > 25.4  # the file's X range is over an inch


@pytest.mark.parametrize("name", ["prusaslicer-2.6.1_benchy.gcode", "cura-3.5.0_xyzcube.gcode"])
def test_printer_bounds_are_inside_the_bed(name):
    a = analyze_file(DATA / "corpus" / name)
    for lo, hi in a.bounds.values():
        assert -5 <= lo <= hi <= 250
