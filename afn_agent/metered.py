"""Use of a machine the agent does not stream to, measured at its plug: busy while the power drawn is
above a threshold. The busy time is what a power-only machine's usage record bills as active time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Meter:
    """Busy seconds from a plug's samples: between two samples, a side's half of the interval counts
    when that side read busy (a change of state is placed half way between the samples that saw it)."""

    threshold_w: float
    busy_s: float = 0.0
    measured: bool = False  # a sample carried watts: the time is the plug's, not the session's
    _last: tuple[float, bool] | None = field(default=None, repr=False)

    def sample(self, at: float, watts: float | None) -> None:
        if watts is None:
            return
        self.measured = True
        busy = watts > self.threshold_w
        if self._last is not None and at > self._last[0]:
            half = (at - self._last[0]) / 2
            self.busy_s += half * (self._last[1] + busy)
        self._last = (at, busy)

    @property
    def in_use(self) -> bool:
        """Busy at the last sample, or not measured at all (then the session alone says so)."""
        return not self.measured or (self._last is not None and self._last[1])

    def figures(self, split: dict[str, float]) -> dict[str, Any]:
        """A session's time split: active is the measured busy time (the whole session without a meter)."""
        total = split["total_s"]
        active = min(self.busy_s, total) if self.measured else total
        source = "power" if self.measured else "session"
        return {**split, "active_s": round(active, 3), "heating_s": 0.0, "paused_s": 0.0, "waiting_s": 0.0,
                "idle_s": round(total - active, 3), "source": source}  # fmt: skip
