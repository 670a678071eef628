"""The lexer on the dialects real files use."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afn_agent.gcode.lexer import COMMA_DECIMAL, UNREAD, lex, wire_text


@pytest.mark.parametrize(
    ("line", "name", "params"),
    [
        ("G1 X10 Y20.5 E.3 F1800", "G1", {"X": 10.0, "Y": 20.5, "E": 0.3, "F": 1800.0}),
        ("g1x10y-2", "G1", {"X": 10.0, "Y": -2.0}),
        ("N123 G1 X1*45", "G1", {"X": 1.0}),
        ("G28 X", "G28", {"X": None}),
        ("G1 Z+0.5 E-5 X-20", "G1", {"Z": 0.5, "E": -5.0, "X": -20.0}),
        ("G01 F1200.0 ; feed", "G1", {"F": 1200.0}),
        ("M03 S1", "M3", {"S": 1.0}),
        ("S90", "", {"S": 90.0}),
        ("X10 Y5", "", {"X": 10.0, "Y": 5.0}),
        ("(setup) G0 X1 (move)", "G0", {"X": 1.0}),
        ('M862.3 P "MK3S"', "M862.3", {"P": None}),
        ("T1", "T1", {}),
        ("G92.1", "G92.1", {}),
    ],
)
def test_words(line, name, params):
    cmd = lex(line, 7)
    assert (cmd.name, cmd.params, cmd.line) == (name, params, 7)


def test_odd_code_numbers_found_by_fuzzing():
    assert lex("G2 G.2 X1").also == ("G0.2",)
    assert lex("G38.20 X1").name == "G38.2"


def test_comma_decimal_is_read_and_flagged():
    cmd = lex("G1 F5400,000000", 3)
    assert cmd.params == {"F": 5400.0} and cmd.flags & COMMA_DECIMAL


def test_several_codes_on_one_line():
    cmd = lex("G17 G90 G94 G54")
    assert cmd.name == "G17" and cmd.also == ("G90", "G94", "G54")
    cmd = lex("M3 S1000 G1 X1")
    assert cmd.name == "M3" and cmd.also == ("G1",) and cmd.params == {"S": 1000.0, "X": 1.0}


def test_messages_keep_their_text():
    assert lex("M117 Layer 1; of 20").text == "Layer 1; of 20"
    assert lex("M118 E1 hello (world)").text == "E1 hello (world)"
    assert lex("M486 S0 AObject_1").text == "S0 AObject_1"


def test_klipper_commands_and_macros_are_named():
    cmd = lex("print_start EXTRUDER=240 BED=110")
    assert cmd.name == "PRINT_START" and cmd.params == {"EXTRUDER": 240.0, "BED": 110.0}
    assert lex("TIMELAPSE_TAKE_FRAME").name == "TIMELAPSE_TAKE_FRAME"
    cmd = lex('EXCLUDE_OBJECT_DEFINE NAME="part 1" CENTER=10,20')
    assert cmd.name == "EXCLUDE_OBJECT_DEFINE" and cmd.params["NAME"] is None


def test_blank_and_comment_lines_give_nothing():
    for line in ("", "   ", "; comment", "%", "(only a comment)", "N10", "*", "N5 *12"):
        assert lex(line) is None


def test_garbage_is_flagged_not_raised():
    cmd = lex("G1 X1 ?? Y2")
    assert cmd.flags & UNREAD and cmd.params == {"X": 1.0, "Y": 2.0}
    assert lex("??").flags & UNREAD


def test_wire_text_keeps_what_the_firmware_needs():
    assert wire_text("G1 X1 ; move") == "G1 X1"
    assert wire_text("M117 50% done; nearly") == "M117 50% done; nearly"
    assert wire_text("G0 (rapid) X1", parens=True) == "G0 X1"
    assert wire_text("G0 (rapid) X1", parens=False) == "G0 (rapid) X1"


@given(st.text(max_size=200))
def test_any_text_lexes_or_is_blank(text):
    cmd = lex(text, 1)
    assert cmd is None or isinstance(cmd.name, str)
