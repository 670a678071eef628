# The compiled analysis core (_core.c): its contract, in one place. mypy checks every caller
# against it; tests/unit/test_core_contract.py checks the compiled module against it.
#
# Units: lengths in mm, times in s, speeds in mm/s, accelerations in mm/s². The F word's conversion
# (mm/min, in/min after G20) happens only in the core (`set_feed_word`, and the fast path).
# Counters the core keeps are read-only; modal state that Python's reading of a line changes is
# writable (the `_modal` code in timeline.py and material.py).

from typing import TypedDict

from .motion import Limits

MAX_TOOLS: int
BEAM: int
SPINDLE: int
POWER_SHIFT: int
# The default machine limits (a Marlin 2 printer's), the one definition: motion.Limits reads them.
class _Defaults(TypedDict):
    max_feedrate: tuple[float, float, float, float]  # X Y Z E
    max_accel: tuple[float, float, float, float]
    jerk: tuple[float, float, float, float]
    accel: float

DEFAULT_LIMITS: _Defaults

def trapezoid_time(distance: float, entry: float, cruise: float, exit: float, accel: float, /) -> float: ...

class Core:
    """The numeric state of one analysis and its compiled per-line path."""

    # modal state, set by Python's reading of the lines the fast path hands back
    relative: int  # G91: XYZ words are relative
    inches: int  # G20
    grbl: int  # GRBL dialect: G0 runs at the machine's top speed
    motion: int  # the modal motion command, 0-3
    spindle_mode: int  # 3 (M3), 4 (M4) or 0 (off)
    feed: float  # mm/s
    feed_factor: float  # M220, 1.0 = 100 %
    spindle: float  # spindle speed or laser power S
    laser_max_s: float  # S of full laser power
    relative_e: int  # E words are relative (M83, G91)
    declared: int  # the file said M82 or M83
    last_delta: float  # signed filament move of the last move
    policed: int  # bit k: a policy rule names Gk, so those lines go to Python
    pos: tuple[float, float, float]
    offset: tuple[float, float, float]  # G92
    # the planner's limits: M204/M205 scalars are set one by one, per-axis tables by the setters
    accel: float
    retract_accel: float
    travel_accel: float
    max_accel_extruding: float
    max_accel_travel: float
    min_feedrate: float
    min_travel_feedrate: float
    junction_deviation: float
    # counters, read-only
    @property
    def tool(self) -> int: ...
    @property
    def rapid_mm(self) -> float: ...
    @property
    def cut_mm(self) -> float: ...
    @property
    def beam_mm(self) -> float: ...
    @property
    def rel_total(self) -> float: ...
    @property
    def rel_pushed(self) -> float: ...
    @property
    def e_moves(self) -> int: ...
    @property
    def abs_backsteps(self) -> int: ...
    @property
    def lines(self) -> int: ...
    @property
    def commands(self) -> int: ...
    @property
    def moving_s(self) -> float: ...
    @property
    def time_by_kind(self) -> tuple[float, float, float]: ...  # printing, travelling, retracting

    def line(self, text: str | bytes, /) -> bool: ...  # True: not a plain move, Python reads it
    def extrude(self, e: float, /) -> float: ...  # an E word for the current tool; the filament moved
    def move(
        self,
        motion: int,
        x: float | None,
        y: float | None,
        z: float | None,
        i: float | None,
        j: float | None,
        r: float | None,
        de: float,
        /,
    ) -> None: ...
    def plan(self, dx: float, dy: float, dz: float, de: float, feed: float, tag: int = 0, /) -> float: ...
    def flush(self) -> None: ...
    def set_limits(self, limits: Limits, /) -> None: ...  # read by field name
    def set_max_feedrate(self, axis: str, value: float, /) -> None: ...  # M203
    def set_max_accel(self, axis: str, value: float, /) -> None: ...  # M201
    def set_jerk(self, axis: str, value: float, /) -> None: ...  # M205 X Y Z E
    def set_feed_word(self, f: float, /) -> None: ...
    def count_command(self) -> None: ...
    def time_by_tag(self) -> dict[int, float]: ...
    def bounds(
        self, working: bool, /
    ) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None: ...
    def add_bounds(self, x: float, y: float, z: float, working: bool, /) -> None: ...
    def select_tool(self, tool: float, /) -> None: ...
    def set_flow(self, tool: float, factor: float, /) -> None: ...
    def set_e_pos(self, e: float, /) -> None: ...
    def set_debt(self, mm: float, /) -> None: ...
    def tools(self) -> list[tuple[int, float, float]]: ...  # (tool, counted mm, pushed mm)
