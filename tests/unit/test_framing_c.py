"""The compiled framing of a burst (firmware/_framing.c) against framing.py, the one the Python path
and the simulators use: the same lines picked, the same bytes."""

from __future__ import annotations

import random

import pytest

from afn_agent.firmware._framing import frame_moves
from afn_agent.firmware.framing import command_word, frame
from afn_agent.firmware.marlin import EXPRESS_WORDS

ODD = ["G1", "g1 x1", "G0\tX1", " G2 X1 Y1 I1 J0", "\x1cG3 X1", "G01 X1", "G10", "G2X1", "G4 P1",
       "M104 S200", "T0", "G1 X1 é", "G1 X1\x00", "G1 X1 ; c", "G1 " + "X1 " * 60, "", " ", "G", "GG1",
       "G1\x1fX2", "G3\x0bY1", "G1\x85X1", "G1\xa0X1"]  # fmt: skip


def expected(first: int, texts: list[str]) -> list[bytes]:
    out = []
    for text in texts:
        if not text.isascii() or command_word(text) not in EXPRESS_WORDS:
            break
        out.append(frame(first + len(out), text))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_compiled_framing_picks_and_frames_what_the_python_framing_would(seed):
    rng = random.Random(seed)
    pool = ODD + [f"G{rng.randint(0, 3)} X{rng.uniform(-500, 500):.3f} Y{rng.uniform(0, 300):.3f} "
                  f"E{rng.uniform(0, 2):.5f} F{rng.randint(60, 18000)}" for _ in range(40)]  # fmt: skip
    for _ in range(50):
        texts = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
        first = rng.choice([0, 1, 99, 100, 12345, 2**31 - 1, 2**40])
        wires, got_texts, tags = frame_moves(first, [(t, i, "note") for i, t in enumerate(texts)])
        want = expected(first, texts)
        assert wires == want, texts
        assert got_texts == texts[: len(want)] and tags == list(range(len(want)))


def test_each_odd_line_alone():
    for text in ODD:
        assert frame_moves(7, [(text, None)])[0] == expected(7, [text]), repr(text)


def test_items_that_are_not_text_and_tag_are_refused():
    with pytest.raises(TypeError):
        frame_moves(1, [("G1 X1",)])
    with pytest.raises(TypeError):
        frame_moves(1, [(b"G1 X1", 0)])
    with pytest.raises(TypeError):
        frame_moves(1, 5)
