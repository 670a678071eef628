"""The message catalogues: both languages name the same fields, every reason the code raises is in them,
and a reason's facts are written the way each language writes them."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from afn_agent import i18n
from afn_agent.errors import Conflict
from afn_agent.machine.console import ConsoleRefused, state_said, travel_problem
from afn_agent.machine.events import MachineState

SOURCE = Path(i18n.__file__).parent


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_languages_fill_the_same_fields():
    """A French message naming another field than the English one would be shown with a blank."""
    odd = {k: (v["en"], v["fr"]) for k, v in i18n.CATALOGUE.items() if _fields(v["en"]) != _fields(v["fr"])}
    assert not odd, odd


def test_every_reason_the_code_gives_is_in_the_catalogues():
    """Each `ConsoleRefused("key")`, `NotHere("key")` and `msg("key")` in the source has its words (a
    missing one would be a bug found at the machine, not here)."""
    used: dict[str, str] = {}
    patterns = {r'ConsoleRefused\("([a-z0-9-]+)"': "refused.{}", r'NotHere\("([a-z0-9-]+)"': "refused.{}",
                r'\bmsg\("([a-z0-9.-]+)"': "{}"}  # fmt: skip
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        for pattern, key in patterns.items():
            for found in re.findall(pattern, text):
                used[key.format(found)] = str(path.relative_to(SOURCE))
    assert len(used) > 30, used  # the scan found the refusals
    missing = {k: where for k, where in used.items() if k not in i18n.CATALOGUE}
    assert not missing, missing
    for what in ("jog", "frame", "raise-z", "job"):  # travel_problem's `what`, built as refused.what.<what>
        assert f"refused.what.{what}" in i18n.CATALOGUE


def test_a_reason_reads_naturally_in_each_language():
    travel = travel_problem({"X": (0.0, 20.25)}, {"X": -10.0}, {"X": (-300.0, 0.0)}, "frame")
    assert travel is not None
    said = Conflict(i18n.msg("refused.job-travel", travel=travel), code="outside-travel").body()
    assert said["code"] == "outside-travel" and said["reason"] == "refused.job-travel"
    assert said["words"]["en"] == (
        "The frame takes X to 10.25 mm (machine coordinates), 10.25 mm beyond its "
        "travel (-300 to 0 mm). Move the work zero, then start it."
    )
    assert said["words"]["fr"] == (
        "Le cadrage amène l'axe X à 10,25 mm (coordonnées machine), 10,25 mm "
        "au-delà de sa course (de -300 à 0 mm). Déplacez le zéro pièce, puis "
        "lancez-le."
    )
    assert said["error"] == said["detail"] == said["words"]["en"]
    assert travel_problem({"X": (0.0, 5.0)}, {"X": -10.0}, {"X": (-300.0, 0.0)}, "frame") is None


def test_a_state_in_a_reason_is_the_screens_word_for_it():
    refused = ConsoleRefused("not-idle", state=state_said(MachineState.PRINTING, "laser"))
    assert refused.body()["words"] == {
        "en": "The machine is busy (Cutting and engraving): set-up actions need it idle, outside a job.",
        "fr": "La machine est occupée (Découpe et gravure) : la préparation se fait machine prête, hors travail.",
    }
    assert state_said(MachineState.ALARM, "mill").key == "state.alarm"


def test_a_plain_error_has_no_words_and_an_unknown_key_is_a_bug():
    assert "words" not in Conflict("plain").body()
    with pytest.raises(KeyError, match=r"refused\.no-such-thing"):
        ConsoleRefused("no-such-thing")
