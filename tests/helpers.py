"""Shared test helpers: profiles with overrides, and reading framed lines back."""

from __future__ import annotations

import re
from dataclasses import replace

from afn_agent.firmware.profile import Profile, load_profile

FRAMED = re.compile(rb"N(\d+) (.*?)\*(\d+)\n")


def profile(name: str = "marlin2", **link_or_timeouts) -> Profile:
    """A shipped profile with some [link] or [timeouts] fields changed."""
    p = load_profile(name)
    link = {k: v for k, v in link_or_timeouts.items() if hasattr(p.link, k)}
    timeouts = {k: v for k, v in link_or_timeouts.items() if hasattr(p.timeouts, k)}
    unknown = set(link_or_timeouts) - set(link) - set(timeouts)
    assert not unknown, unknown
    return replace(p, link=replace(p.link, **link), timeouts=replace(p.timeouts, **timeouts))


def framed(data: bytes) -> list[tuple[int, str]]:
    """(line number, command) of every framed line in `data`."""
    return [(int(n), cmd.decode()) for n, cmd, _ in FRAMED.findall(data)]
