# Marlin's framing for a batch of plain moves (_framing.c): its contract, checked by mypy at every caller.
from collections.abc import Iterable
from typing import Any

def frame_moves(
    first_seq: int, items: Iterable[tuple[Any, ...]], /
) -> tuple[list[bytes], list[str], list[Any]]: ...
