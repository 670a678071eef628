"""Tests wait on conditions (tests/helpers.wait_for), not on fixed sleeps. A sleep of 0.3 s or more is
allowed only where real time itself must pass, and its line says so (`# real time: ...`)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
LONG_S = 0.3


def long_sleeps(path: Path) -> list[int]:
    """Line numbers of `time.sleep(<constant ≥ LONG_S>)` calls in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "sleep"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, int | float)
            and node.args[0].value >= LONG_S
        ):
            out.append(node.lineno)
    return out


def test_every_long_sleep_says_why_real_time_must_pass():
    bare = []
    for path in sorted(TESTS.rglob("*.py")):
        lines = path.read_text().splitlines()
        bare += [f"{path.relative_to(TESTS)}:{n}" for n in long_sleeps(path) if "# real time:" not in lines[n - 1]]
    assert not bare, "wait on a condition (tests.helpers.wait_for) instead: " + ", ".join(bare)
