"""How long until each heater reaches its target, from how fast it has been warming: the console shows a
heating phase with a time to temperature instead of a progress that stands still."""

from __future__ import annotations

from collections.abc import Mapping

SMOOTHING = 0.3  # weight of the newest rate (reports come every 1-2 s; single ones are noisy)
NEAR_C = 2.0  # within this of its target a heater counts as there


class HeatWatch:
    """Owned by the machine thread; `eta_s` is a new dict at each report (others only read it)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}
        self._rate: dict[str, float] = {}  # °C/s, smoothed
        self.eta_s: Mapping[str, float | None] = {}

    def report(self, heaters: Mapping[str, tuple[float, float]], now: float) -> Mapping[str, float | None]:
        eta: dict[str, float | None] = {}
        for name, (actual, target) in heaters.items():
            last = self._last.get(name)
            self._last[name] = (now, actual)
            if last is not None and now - last[0] > 0.2:
                rate = (actual - last[1]) / (now - last[0])
                self._rate[name] = SMOOTHING * rate + (1 - SMOOTHING) * self._rate.get(name, rate)
            rate = self._rate.get(name, 0.0)
            if target <= 0 or actual >= target - NEAR_C:
                eta[name] = 0.0 if target > 0 else None
            else:
                eta[name] = (target - actual) / rate if rate > 0.05 else None  # not warming (yet): unknown
        self.eta_s = {**self.eta_s, **eta}
        return self.eta_s
