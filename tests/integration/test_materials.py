"""Materials that bill right: a PETG job and an ABS job on a simulated printer, each weighed at its own
density and priced at its own price per kg; a file sliced for another filament is flagged in the quote."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import jsonschema
import pytest

from afn_agent.config import ConfigError, load_config
from afn_agent.errors import Conflict, InvalidInput
from afn_agent.intake import submit
from afn_agent.ledger.usage import SCHEMA_FILE, reprice
from tests.helpers import under_way

MATERIALS = """
[materials.PETG]
density_g_cm3 = 1.27
price_per_kg = 32.0
nozzle_c = [220, 250]

[materials.abs]
density_g_cm3 = 1.04
price_per_kg = 21.5
"""


def sliced_for(tmp_path, name: str, filament: str):
    """A job as PrusaSlicer writes one: its filament's type and (PLA's) density in the config block."""
    path = tmp_path / f"{name}.gcode"
    moves = "".join(f"G1 X{100 + (i % 2) * 20} Y{100 + i * 0.01:.2f} E0.8 F6000\n" for i in range(1500))
    path.write_text(f"G90\nM83\n{moves}; filament_type = {filament}\n; filament_density = 1.24\n"
                    "; filament_diameter = 1.75\n")  # fmt: skip
    return path


def grams(mm: float, density: float) -> float:
    return mm * math.pi * (1.75 / 2) ** 2 * density / 1000


def test_petg_and_abs_jobs_billed_at_their_own_density_and_price(one_machine, tmp_path):
    agent, _sim = one_machine("printer-1", safety=MATERIALS, extra_machine={"material": "PETG"})
    petg_job, petg_quote = submit(agent.config, agent.ledger, "printer-1", sliced_for(tmp_path, "petg", "PETG"),
                                  "test", member_id="ana")  # fmt: skip
    assert petg_quote["material"]["loaded"]["name"] == "PETG" and not petg_quote["material"]["mismatch"]
    assert agent.wait_idle("printer-1", 60)
    agent.control.set_material("printer-1", "abs", "max")  # any case: the preset is ABS
    abs_job, abs_quote = submit(agent.config, agent.ledger, "printer-1", sliced_for(tmp_path, "abs", "PETG"),
                                "test", member_id="bob")  # fmt: skip
    assert abs_quote["material"]["mismatch"] and abs_quote["material"]["sliced_for"] == ["PETG"]
    assert "PETG" in abs_quote["material"]["warning"]["en"] and "ABS" in abs_quote["material"]["warning"]["fr"]
    assert abs_quote["material_g"] == pytest.approx(grams(abs_quote["material_mm"], 1.04), rel=1e-3)
    assert agent.wait_idle("printer-1", 60)

    records = {r["job"]["id"]: r for _, r in agent.ledger.usage_after(0, 10)}
    for job_id, name, density, per_kg in ((petg_job, "PETG", 1.27, "32.0"), (abs_job, "ABS", 1.04, "21.5")):
        rec = records[job_id]
        jsonschema.validate(rec, json.loads(SCHEMA_FILE.read_text()))
        (used,) = rec["material"]
        assert (used["kind"], used["density_g_cm3"], used["price_per_kg"]) == (name, density, per_kg)
        assert used["g"] == pytest.approx(grams(used["mm"], density), rel=1e-3), "weighed at its density"
        assert Decimal(rec["tariff"]["per_gram"]) == Decimal(per_kg) / 1000
        qty = {k: Decimal(str(v)) for k, v in rec["billing"]["quantities"].items()}
        assert float(qty["material_g"]) == pytest.approx(used["g"], abs=0.01)
        assert rec["price"] == reprice(rec)
        # the printer tariff's 0.10 per active minute, and the material's price per gram
        expected = qty["active_min"] * Decimal("0.10") + qty["material_g"] * Decimal(per_kg) / 1000
        assert abs(Decimal(rec["price"]) - max(expected, Decimal("0.50"))) <= Decimal("0.05")
    petg, abs_ = records[petg_job]["material"][0], records[abs_job]["material"][0]
    assert petg["mm"] == pytest.approx(abs_["mm"], rel=1e-6), "the same file: the same length"
    assert abs_["g"] / petg["g"] == pytest.approx(1.04 / 1.27, rel=1e-4)
    audit = [a for a in agent.ledger.audit_log("printer-1") if a["action"] == "material"]
    assert audit[0]["actor"] == "max" and audit[0]["result"] == "ABS"
    assert agent.control.status("printer-1")["material"] == "ABS"


def test_material_refusals(one_machine, tmp_path):
    agent, _sim = one_machine("printer-1", safety=MATERIALS)
    with pytest.raises(InvalidInput, match=r"no material preset 'unobtainium'.*PETG"):
        agent.control.set_material("printer-1", "unobtainium", "max")
    submit(agent.config, agent.ledger, "printer-1", sliced_for(tmp_path, "long", "PLA"), "test", member_id="a")
    under_way(agent.machines["printer-1"], 20)
    with pytest.raises(Conflict, match="job is running"):
        agent.control.set_material("printer-1", "PETG", "max")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("density_g_cm3 = 12.0", r"materials.PETG.density_g_cm3: expected a number <= 3, got 12.0"),
        ("density_g_cm3 = 1.2\nprice = 3", r"materials.PETG.price: unknown key \(did you mean price_per_kg\?\)"),
        ("density_g_cm3 = 1.2\nnozzle_c = [250, 200]", r"materials.PETG.nozzle_c: \[low, high\]"),
        ("price_per_kg = 30", r"materials.PETG.density_g_cm3 is required"),
    ],
)
def test_bad_material_tables_are_named(tmp_path, table, message):
    from tests.helpers import write_config

    path = write_config(tmp_path / "agent.toml", [])
    path.write_text(path.read_text() + f"\n[materials.PETG]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
