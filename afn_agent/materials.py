"""Material presets: what a filament weighs and costs, so a job is billed for what the machine has loaded
(ABS weighed at PLA's 1.24 g/cm³ was billed 19 % heavy), and a file sliced for another one is flagged."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .gcode.analyzer import file_ends
from .i18n import words
from .ledger.tariff import Tariff

if TYPE_CHECKING:
    from .config import AgentConfig
    from .ledger import Ledger

# PrusaSlicer, SuperSlicer, OrcaSlicer, Bambu Studio: `; filament_type = PETG` (`PLA;PETG` for two tools)
FILAMENT_TYPE = re.compile(r"^;\s*filament_type\s*=\s*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Material:
    """A preset: its name (as slicers write it), density, price per kg, temperature ranges."""

    name: str
    density_g_cm3: float
    price_per_kg: Decimal | None = None  # None: the machine tariff's per_gram applies
    nozzle_c: tuple[float, float] | None = None
    bed_c: tuple[float, float] | None = None

    def snapshot(self) -> dict[str, Any]:
        """What a quote and a usage record say of it (JSON-ready; money as a decimal string)."""
        return {
            "name": self.name,
            "density_g_cm3": self.density_g_cm3,
            "price_per_kg": str(self.price_per_kg) if self.price_per_kg is not None else None,
            "nozzle_c": list(self.nozzle_c) if self.nozzle_c else None,
            "bed_c": list(self.bed_c) if self.bed_c else None,
        }


def from_snapshot(snap: dict[str, Any] | None) -> Material | None:
    """A preset back from a checkpoint (a job closed after a restart is priced as it started)."""
    if not snap:
        return None
    price = snap.get("price_per_kg")
    return Material(snap["name"], float(snap["density_g_cm3"]), Decimal(price) if price is not None else None)


# Common filaments' densities (manufacturers' data sheets, rounded); a config's [materials.X] replaces one.
BUILT_IN: dict[str, Material] = {
    m.name: m
    for m in (
        Material("PLA", 1.24, nozzle_c=(190, 230), bed_c=(50, 70)),
        Material("PETG", 1.27, nozzle_c=(220, 250), bed_c=(70, 90)),
        Material("ABS", 1.04, nozzle_c=(230, 260), bed_c=(90, 110)),
        Material("ASA", 1.07, nozzle_c=(235, 260), bed_c=(90, 110)),
        Material("TPU", 1.21, nozzle_c=(210, 240), bed_c=(30, 60)),
        Material("PC", 1.20, nozzle_c=(260, 300), bed_c=(100, 120)),
        Material("PA", 1.14, nozzle_c=(240, 280), bed_c=(70, 90)),
    )
}


def key(name: str) -> str:
    """Presets are found whatever the case (`petg`, `PETG`)."""
    return name.strip().upper()


def tariff_with(tariff: Tariff, material: Material | None) -> Tariff:
    """The machine's tariff with the material's price per kg as its price per gram (the record's
    tariff snapshot then prices it again with `price()` alone)."""
    if material is None or material.price_per_kg is None:
        return tariff
    return replace(tariff, per_gram=material.price_per_kg / 1000)


def reweigh(grams: float, stated_density: float, material: Material | None) -> float:
    """Grams of the same filament length at the loaded material's density."""
    if material is None or stated_density <= 0:
        return grams
    return grams * material.density_g_cm3 / stated_density


def file_types(path: str | Path) -> list[str]:
    """The filament types a file says it was sliced for (head and tail, where slicers write them)."""
    found: list[str] = []
    for chunk in file_ends(path):
        for m in FILAMENT_TYPE.finditer(chunk):
            for name in m.group(1).split(";"):
                if (k := key(name.strip().strip('"'))) and k not in found:
                    found.append(k)
    return found


def check(material: Material | None, stated: list[str]) -> dict[str, Any]:
    """What a quote says of the material: the loaded one, what the file was sliced for, a mismatch."""
    out: dict[str, Any] = {"loaded": material.snapshot() if material else None, "sliced_for": stated}
    out["mismatch"] = bool(material and stated and key(material.name) not in stated)
    if material and out["mismatch"]:
        out["warning"] = words("quote.material-mismatch", loaded=material.name, sliced=", ".join(stated))
    return out


def loaded(config: AgentConfig, ledger: Ledger, machine_id: str) -> Material | None:
    """The preset loaded in a machine now: a manager's or member's choice (kept in the ledger), else its
    configured `material`; None when that is a plain label."""
    row = ledger.machine(machine_id) or {}
    m = config.find(machine_id)
    return config.preset(row.get("material") or (m.material if m else None))
