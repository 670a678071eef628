"""Our filament count against what each producer states in (or about) its own file."""

import csv
from pathlib import Path

import pytest

from afn_agent.gcode.analyzer import analyze_file

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
with open(CORPUS / "MANIFEST.tsv", encoding="utf-8") as _f:
    MANIFEST = list(csv.DictReader(_f, delimiter="\t"))
# Slic3r 1.2.9's footer reads "filament used = 1482.1mm, 34.4mm": the manifest adds both figures, but the
# file never selects a second extruder (no T1); the one extruder it uses is stated as 1482.1 mm.
OWN_FIGURE = {"slic3r-1.2.9_reprap.gcode": 1482.1}
STATED = [r for r in MANIFEST if r["stated_filament_mm"]]


@pytest.mark.parametrize("row", STATED, ids=[r["file"] for r in STATED])
def test_filament_within_0_1_percent_of_the_producer(row):
    a = analyze_file(CORPUS / row["file"])
    stated = OWN_FIGURE.get(row["file"], float(row["stated_filament_mm"]))
    assert a.producer_count_mm == pytest.approx(stated, rel=1e-3)
    if row["stated_filament_g"]:
        assert a.producer_count_g == pytest.approx(float(row["stated_filament_g"]), abs=0.006)


@pytest.mark.parametrize("row", MANIFEST, ids=[r["file"] for r in MANIFEST])
def test_every_corpus_file_reads_without_unreadable_lines(row):
    a = analyze_file(CORPUS / row["file"])
    assert a.lines == int(row["lines"])
    assert not [w for w in a.warnings if "not G-code" in w]
