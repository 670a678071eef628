"""The planner, the timeline and the policy, on moves whose answers can be worked out by hand."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afn_agent.gcode._core import Core
from afn_agent.gcode.analyzer import Analyzer
from afn_agent.gcode.lexer import lex
from afn_agent.gcode.motion import Limits, trapezoid_time
from afn_agent.gcode.policy import Policy


def Planner(limits: Limits) -> Core:
    """The compiled planner alone, with these limits."""
    core = Core()
    core.set_limits(limits)
    return core


def test_trapezoid_with_cruise():
    # 0 -> 100 mm/s at 1000 mm/s²: 0.1 s and 5 mm each way, 90 mm cruising: 0.9 s
    assert trapezoid_time(100, 0, 100, 0, 1000) == pytest.approx(1.1)


def test_triangle_when_too_short_to_cruise():
    # peak v: d = v²/a -> v = sqrt(10 * 1000) = 100; t = 2 v / a
    assert trapezoid_time(10, 0, 500, 0, 1000) == pytest.approx(0.2)


def test_a_single_move_starts_and_ends_at_rest():
    p = Planner(Limits(jerk={"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}, accel=1000, travel_accel=1000))
    p.plan(100, 0, 0, 0, 100)
    p.flush()
    assert p.moving_s == pytest.approx(1.1)


def test_straight_line_in_pieces_takes_as_long_as_one_move():
    lim = Limits(accel=1000, travel_accel=1000)
    one, many = Planner(lim.copy()), Planner(lim.copy())
    one.plan(100, 0, 0, 0, 100)
    for _ in range(100):
        many.plan(1, 0, 0, 0, 100)
    one.flush()
    many.flush()
    assert many.moving_s == pytest.approx(one.moving_s, rel=0.02)


def test_sharp_corners_cost_time_that_jerk_buys_back():
    def square(jerk: float) -> float:
        p = Planner(Limits(jerk={"X": jerk, "Y": jerk, "Z": 0.4, "E": 5}, accel=500, travel_accel=500))
        for dx, dy in [(20, 0), (0, 20), (-20, 0), (0, -20)] * 5:
            p.plan(dx, dy, 0, 0, 100)
        p.flush()
        return p.moving_s

    assert square(1) > square(20) > 0


def test_feedrate_limited_per_axis():
    p = Planner(Limits(max_feedrate={"X": 10, "Y": 500, "Z": 12, "E": 120}, accel=1e9, travel_accel=1e9))
    p.plan(10, 0, 0, 0, 100)
    p.flush()
    assert p.moving_s == pytest.approx(1.0, rel=1e-3)


def run(text: str, **kw) -> Analyzer:
    a = Analyzer(**kw)
    for line in text.strip().splitlines():
        a.feed_line(line + "\n")
    return a


def test_dwell_units_differ_between_dialects():
    assert run("G4 P500").result().dwell_s == pytest.approx(0.5)
    assert run("G4 P2", grbl=True).result().dwell_s == pytest.approx(2.0)
    assert run("G4 S3").result().dwell_s == pytest.approx(3.0)


def test_heating_wait_follows_the_heat_up_model():
    r = run("M109 S205").result()  # from 25 °C at 2 °C/s
    assert r.heating_s == pytest.approx(90.0)
    r = run("M104 S205\nG4 S30\nM109 S205").result()  # heating went on during the dwell
    assert r.heating_s == pytest.approx(60.0)
    assert run("M190 S60\nM109 R20").result().heating_s == pytest.approx(70.0)


def test_arc_length_and_bounds():
    r = run("G21\nG90\nG0 X10 Y0 F6000\nG3 X-10 Y0 I-10 J0 F600").result()
    assert r.cutting_mm == pytest.approx(math.pi * 10, rel=1e-3)
    assert r.bounds_all_moves["Y"][1] == pytest.approx(10, abs=1e-6)  # the top of the arc, not a chord
    assert r.bounds_all_moves["Y"][0] == pytest.approx(0, abs=1e-6)


def test_an_absurd_arc_is_bounded_not_a_hang():
    r = run("G1 X0 Y0\nG3 X0 Y1 I99999999 J0").result()  # the long way round a 100 km circle
    assert r.cutting_mm > 1e8 and math.isfinite(r.moving_s)


def test_inches_offsets_and_relative_moves():
    r = run("G20\nG0 X1 Y1\nG91\nG0 X1\nG90\nG92 X0\nG0 X2").result()
    assert r.bounds_all_moves["X"] == [pytest.approx(25.4), pytest.approx(101.6)]  # move ends, in mm


def test_in_file_limits_change_the_estimate():
    slow = run("M204 P100\nM83\nG1 X100 E1 F6000").result().moving_s
    fast = run("M204 P10000\nM83\nG1 X100 E1 F6000").result().moving_s
    assert slow > 1.5 * fast


def test_laser_beam_is_never_on_in_rapids():
    r = run("M4 S500\nG0 X50 F3000\nG1 X100 F600\nM5", kind="laser", grbl=True).result()
    assert r.beam_on_mm == pytest.approx(50) and r.rapid_mm == pytest.approx(50)
    assert r.beam_full_power_s == pytest.approx(r.beam_on_s * 0.5, rel=1e-6)


def test_policy_patterns():
    pol = Policy(("M500", "G10 L2", "$=", "$RST", 'M98 P"config.g"'), "grbl")
    for i, line in enumerate(
        ["M500", "G10 L2 P1 X0", "G10 L20 P1", "$110=500", "$H", "$RST=#", 'M98 P"config.g"'], 1
    ):
        pol.check(lex(line, i), line)
    assert [v.line for v in pol.violations] == [1, 2, 4, 6, 7]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(
                [
                    "G1 X1e9 Y-1e9 F0",
                    "G2 X0 Y0 I0 J0",
                    "G3 R-0 X1",
                    "M204 S0",
                    "M203 X0",
                    "G4 P-5",
                    "M109 S-300",
                    "G1 E-1e12",
                    "G91",
                    "G20",
                    "T99",
                    "M3 S1e9",
                    "G1 F-100 X5",
                    "M205 J0.02",
                ]
            ),
        ),
        max_size=40,
    )
)
def test_any_input_gives_a_result(lines):
    a = Analyzer()
    for line in lines:
        a.feed_line(line + "\n")
    r = a.result()
    for value in (r.estimated_s, r.moving_s, r.dwell_s, r.heating_s, r.material_mm, r.beam_on_s):
        assert math.isfinite(value) and value >= 0


def fields(a: Analyzer) -> dict:
    r = a.result()
    return {k: v for k, v in vars(r).items() if k not in ("file", "warnings")}


MOVE = st.tuples(
    st.sampled_from(["G0", "G1", "G1", "G1", "G2", "G3"]),
    st.lists(
        st.tuples(
            st.sampled_from("XYZEFIJS"),
            st.one_of(
                st.integers(-300, 300).map(str),
                st.floats(-300, 300, allow_nan=False).map(lambda v: f"{v:.4f}"),
                st.sampled_from(["0", "-0", ".5", "5.", "+2", "-.25", "0.0000"]),
            ),
        ),
        max_size=6,
    ),
)
MODAL = st.sampled_from(["M82", "M83", "G91", "G90", "G92 E0", "T1", "T0", "M3 S400", "M5", "G20", "G21",
                         "M204 S800", "M205 X5 Y5", "M221 S90", "M220 S150", "G4 P100", "G92 X1 Y2"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(MOVE, MODAL), min_size=1, max_size=60), st.booleans())
def test_compiled_lines_and_python_lines_count_alike(program, junction_deviation):
    """The compiled path takes plain moves; the same moves read in Python (lower case, a paren
    comment: lines the core hands back) must give the very same figures — one analyzer, two doors."""
    fast, slow = Analyzer(), Analyzer()
    if junction_deviation:
        for a in (fast, slow):
            a.feed_line("M205 J0.05\n")
    for item in program:
        if isinstance(item, str):
            fast.feed_line(item + "\n")
            slow.feed_line(item + "\n")
            continue
        code, words = item
        text = code + "".join(f" {letter}{value}" for letter, value in words)
        assert not Core().line(text + " ; plain\n"), text  # a line the compiled path takes
        fast.feed_line(text + " ; plain\n")
        slow.feed_line(text.lower() + " (the same, read in Python)\n")
    assert fields(fast) == fields(slow)


@pytest.mark.parametrize(
    "line",
    ["; comment", "M104 S200", "G28", "G1 X1,5", "g1 x1", "G1 X1 (c)", "G10", "G1 X", "G1 X1 P2", "S100",
     "N10 G1 X1*33", "G1 X1.2.3", "G01.5 X1", 'G1 X1 "q"', "G1\tX1\x0b", "G1 X1\udc80", "G1 Xinf", "G1 XNaN"],
)
def test_the_compiled_path_hands_back_what_it_does_not_read_as_a_plain_move(line):
    core = Core()
    taken = not core.line(line + "\n")
    assert taken == (line == "N10 G1 X1*33"), line  # a numbered, checksummed move is still plain
    assert core.lines == 1


def test_moves_a_policy_names_are_checked_by_the_policy():
    a = Analyzer(policy=Policy(("G0",), "marlin"))
    for line in ("G1 X1", "G0 X5", "G1 X2"):
        a.feed_line(line + "\n")
    r = a.result()
    assert [v["line"] for v in r.policy_violations] == [2]
    assert r.bounds_all_moves["X"] == [1.0, 5.0]
