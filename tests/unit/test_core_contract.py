"""The compiled core against its contract (afn_agent/gcode/_core.pyi): every name the stub promises
exists, counters cannot be written from Python, limits are read by name, defaults live once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from afn_agent.gcode import _core
from afn_agent.gcode._core import DEFAULT_LIMITS, Core
from afn_agent.gcode.motion import Limits

STUB = Path(_core.__file__).with_name("_core.pyi")


def stub_core() -> tuple[set[str], set[str], set[str]]:
    """(methods, read-only properties, writable members) of `Core` in the stub."""
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Core")
    methods, readonly, writable = set(), set(), set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            is_prop = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
            (readonly if is_prop else methods).add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            writable.add(node.target.id)
    return methods, readonly, writable


def test_every_name_in_the_stub_is_in_the_compiled_module():
    methods, readonly, writable = stub_core()
    core = Core()
    for name in methods:
        assert callable(getattr(core, name)), name
    for name in readonly | writable:
        getattr(core, name)
    compiled = {n for n in dir(Core) if not n.startswith("_")}
    assert compiled == methods | readonly | writable, "stub and module differ"
    for name in ("MAX_TOOLS", "BEAM", "SPINDLE", "POWER_SHIFT", "DEFAULT_LIMITS", "trapezoid_time"):
        assert hasattr(_core, name), name


def test_counters_are_read_only_and_modal_state_is_writable():
    _, readonly, writable = stub_core()
    core = Core()
    for name in readonly:
        with pytest.raises(AttributeError):
            setattr(core, name, getattr(core, name))
    for name in writable:
        setattr(core, name, getattr(core, name))


def test_limits_are_read_by_name_and_defaults_are_defined_once():
    assert Limits().max_feedrate == dict(zip("XYZE", DEFAULT_LIMITS["max_feedrate"], strict=True))
    assert Limits().accel == DEFAULT_LIMITS["accel"]

    def seconds(limits: Limits) -> float:
        core = Core()
        core.set_limits(limits)
        core.set_feed_word(6000.0)  # 100 mm/s
        core.move(1, 100.0, None, None, None, None, None, 0.0)
        core.flush()
        return core.moving_s

    slow = Limits()
    slow.max_accel = {**slow.max_accel, "X": 100.0}
    assert seconds(slow) > 1.5 * seconds(Limits())  # the changed field, read by its name
    core = Core()
    with pytest.raises(ValueError, match="axis must be X, Y, Z or E"):
        core.set_max_feedrate("Q", 10.0)
    with pytest.raises(AttributeError):
        core.set_limits(object())


def test_the_f_word_is_converted_in_one_place():
    core = Core()
    core.set_feed_word(1500.0)
    assert core.feed == pytest.approx(25.0)
    core.inches = 1
    core.set_feed_word(60.0)  # 60 in/min
    assert core.feed == pytest.approx(25.4)
    fast = Core()
    fast.line("G1 X1 F1500\n")
    assert fast.feed == pytest.approx(25.0)
