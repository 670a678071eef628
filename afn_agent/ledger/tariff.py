"""Tariffs and prices: what a machine costs per minute and per gram, and what a stopped job is charged.

Money is `Decimal` end to end; a usage record carries its tariff as a snapshot and the quantities it
was priced on, so anyone can recompute its price with `price()` alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

BASES = ("full", "done_part", "none")
STOP_TYPES = ("normal", "cancelled", "fault", "offline", "permission", "admin")
RATES = {  # tariff field -> the quantity it multiplies (see QUANTITIES)
    "per_active_minute": "active_min",
    "per_heating_minute": "heating_min",
    "per_paused_minute": "paused_min",
    "per_waiting_minute": "waiting_min",
    "per_gram": "material_g",
    "per_metre": "material_m",
    "per_beam_minute": "beam_min",
    "per_spindle_minute": "spindle_min",
}
QUANTITIES = tuple(RATES.values())


class TariffError(ValueError):
    """A tariff that cannot price anything; the message names the field."""


@dataclass(frozen=True)
class Tariff:
    """Rates per machine; a stop type missing from `policy` is charged for the part done."""

    name: str = "default"
    currency: str = "EUR"
    per_active_minute: Decimal = Decimal(0)
    per_heating_minute: Decimal = Decimal(0)
    per_paused_minute: Decimal = Decimal(0)
    per_waiting_minute: Decimal = Decimal(0)  # a job waiting for a person (M0, a tool or filament change)
    per_gram: Decimal = Decimal(0)
    per_metre: Decimal = Decimal(0)
    per_beam_minute: Decimal = Decimal(0)
    per_spindle_minute: Decimal = Decimal(0)
    minimum: Decimal = Decimal(0)
    rounding: Decimal = Decimal("0.01")
    rounding_mode: str = "nearest"  # nearest | up
    policy: dict[str, str] = field(default_factory=dict)  # stop type -> full | done_part | none

    def basis(self, stop_type: str) -> str:
        """What a job that stopped this way is charged on; a normal end is always the part done."""
        if stop_type == "normal":
            return "done_part"
        return self.policy.get(stop_type, "done_part")

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy with every amount as a decimal string."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Decimal):
                out[key] = str(value)
        out["policy"] = {k: self.basis(k) for k in STOP_TYPES}
        return out

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], where: str = "tariff") -> Tariff:
        """Read a snapshot or a config table; unknown or bad fields raise TariffError naming them."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs: dict[str, Any] = {}
        for key, value in snap.items():
            if key not in known:
                raise TariffError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
            if key in ("name", "currency"):
                kwargs[key] = str(value)
            elif key == "rounding_mode":
                if value not in ("nearest", "up"):
                    raise TariffError(f"{where}.rounding_mode: expected 'nearest' or 'up', got {value!r}")
                kwargs[key] = value
            elif key == "policy":
                kwargs[key] = _policy(value, where)
            else:
                kwargs[key] = _amount(value, f"{where}.{key}")
        tariff = cls(**kwargs)
        if tariff.rounding <= 0:
            raise TariffError(f"{where}.rounding: must be above 0, got {tariff.rounding}")
        return tariff


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TariffError(f"{where}: expected a number, got {value!r}")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise TariffError(f"{where}: expected a number, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise TariffError(f"{where}: expected a number >= 0, got {value!r}")
    return amount


def _policy(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TariffError(f"{where}.policy: expected a table of stop type = basis")
    for stop, basis in value.items():
        if stop not in STOP_TYPES:
            raise TariffError(f"{where}.policy.{stop}: unknown stop type (known: {', '.join(STOP_TYPES)})")
        if basis not in BASES:
            raise TariffError(f"{where}.policy.{stop}: expected one of {', '.join(BASES)}, got {basis!r}")
    return dict(value)


def quantities(figures: dict[str, float]) -> dict[str, str]:
    """Billable quantities from a job's figures (seconds, grams, mm), as decimal strings, 4 places.

    Rounded once here so that the record shows exactly what was multiplied.
    """
    q = {
        "active_min": figures.get("active_s", 0.0) / 60,
        "heating_min": figures.get("heating_s", 0.0) / 60,
        "paused_min": figures.get("paused_s", 0.0) / 60,
        "waiting_min": figures.get("waiting_s", 0.0) / 60,
        "material_g": figures.get("material_g", 0.0),
        "material_m": figures.get("material_mm", 0.0) / 1000,
        "beam_min": figures.get("beam_on_s", 0.0) / 60,
        "spindle_min": figures.get("spindle_on_s", 0.0) / 60,
    }
    return {k: str(Decimal(max(v, 0.0)).quantize(Decimal("0.0001"), ROUND_HALF_UP)) for k, v in q.items()}


def price(tariff: Tariff, qty: dict[str, str], basis: str) -> Decimal:
    """Sum of rate x quantity, raised to the minimum, rounded by the tariff; nothing when basis is none."""
    if basis == "none":
        return Decimal(0).quantize(_cents(tariff.rounding))
    total = sum(
        (getattr(tariff, rate) * Decimal(qty.get(name, "0")) for rate, name in RATES.items()),
        Decimal(0),
    )
    total = max(total, tariff.minimum)
    mode = ROUND_CEILING if tariff.rounding_mode == "up" else ROUND_HALF_UP
    steps = (total / tariff.rounding).quantize(Decimal(1), mode)
    return (steps * tariff.rounding).quantize(_cents(tariff.rounding))


def _cents(rounding: Decimal) -> Decimal:
    """Prices are written with at least two decimals (1.00, not 1.0), more when the step needs them."""
    exponent = rounding.as_tuple().exponent
    return rounding if isinstance(exponent, int) and exponent < -2 else Decimal("0.01")
