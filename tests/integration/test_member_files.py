"""Member lists as a French lab's spreadsheet saves them, through `afn-agent members import`: `;` and a
UTF-8 byte-order mark (Excel's "CSV UTF-8"), Windows-1252 (Excel's plain "CSV"), `31/12/2027` dates, the
XLSX workbook itself (written by openpyxl, with real date cells); and wrong rows, every one named by line
and column, with nothing imported."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from openpyxl import Workbook
from referencing import Registry, Resource

from afn_agent.access.directory import Directory
from afn_agent.access.member_file import read_member_file
from afn_agent.agent import open_ledger
from afn_agent.bus import client as bus_client
from afn_agent.config import load_config
from tests.integration.test_cli_agent import afn, config

SCHEMAS = Path(bus_client.__file__).with_name("schemas")
DOC = Path(__file__).resolve().parents[2] / "docs" / "members.md"

HEADER = ["member_id", "name", "roles", "badge_uid", "class", "expires", "supervised"]


def check(cfg: str, uid: str, machine: str = "printer-1") -> str:
    p = afn("members", "check", uid, "--config", cfg, "--machine", machine)
    return p.stdout


def test_excel_csv_utf8_with_bom_and_semicolons(tmp_path):
    cfg = config(tmp_path)
    f = tmp_path / "adherents.csv"
    f.write_bytes("\ufeff".encode() + ";".join(HEADER).encode() + b"\r\n"
                  + "léa;Léa Müller;member;0A00123456;fdm-printer;31/12/2099;non\r\n".encode()
                  + "zoé;Zoé;member trainer;0A00BBBBBB;fdm-printer;2099-06-30;oui\r\n".encode()
                  + b";;;;;;\r\n")  # fmt: skip  (a blank row Excel leaves at the end)
    p = afn("members", "import", str(f), "--config", cfg)
    assert p.returncode == 0 and "imported 2 member(s)" in p.stdout, p.stderr
    assert check(cfg, "0A00123456").startswith("allowed") and "Léa Müller" in check(cfg, "0A00123456")


def test_excel_plain_csv_is_windows_1252(tmp_path):
    cfg = config(tmp_path)
    f = tmp_path / "adherents.csv"
    f.write_bytes((";".join(HEADER) + "\r\nrené;René Côté;member;0A00CCCCCC;fdm-printer;01/02/2099;\r\n")
                  .encode("cp1252"))  # fmt: skip
    p = afn("members", "import", str(f), "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert "René Côté" in check(cfg, "0A00CCCCCC")


def test_an_xlsx_workbook_with_date_cells(tmp_path):
    cfg = config(tmp_path)
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    sheet.append(["ana", "Ana", "member", "0A00DDDDDD", "fdm-printer", datetime(2099, 12, 31), "no"])
    sheet.append(["max", "Max", "manager", 123456, None, None, None])  # a numeric UID cell, no training
    book.save(tmp_path / "members.xlsx")
    p = afn("members", "import", str(tmp_path / "members.xlsx"), "--config", cfg)
    assert p.returncode == 0 and "imported 2 member(s)" in p.stdout, p.stderr
    assert check(cfg, "0A00DDDDDD").startswith("allowed")
    assert check(cfg, "123456").startswith("allowed"), "a manager, by the number the cell held"


def test_wrong_rows_are_all_named_and_nothing_is_imported(tmp_path):
    cfg = config(tmp_path)
    f = tmp_path / "members.csv"
    f.write_text(";".join(HEADER) + "\n"
                 "ana;Ana;member;0A00123456;fdm-printer;31/13/2027;no\n"
                 ";Nobody;member;0A00999999;;;\n"
                 "bob;Bob;admin;0A00BBBBBB;;;\n"
                 "eve;Eve;member;0A00EEEEEE;laser;2099-01-01;maybe\n")  # fmt: skip
    p = afn("members", "import", str(f), "--config", cfg)
    assert p.returncode == 2, p.stderr
    for said in ("members.csv line 2, column expires: '31/13/2027' is not a date",
                 "members.csv line 3, column member_id: empty",
                 "members.csv line 4, column roles: 'admin' is not one of member, trainer, manager",
                 "members.csv line 5, column supervised: 'maybe' is not yes or no", "nothing was imported"):  # fmt: skip
        assert said in p.stderr, (said, p.stderr)
    assert check(cfg, "0A00EEEEEE").startswith("unknown_badge"), "not a row of it was imported"
    typo = tmp_path / "typo.csv"
    typo.write_text("member_id,badge_uid,expiry\nana,0A00123456,2099-01-01\n")
    p = afn("members", "import", str(typo), "--config", cfg)
    assert p.returncode == 2 and "unknown column 'expiry' (did you mean expires?)" in p.stderr, p.stderr



def test_the_documented_examples_are_valid_and_accepted(tmp_path):
    """docs/members.md's snapshot and delta pass the shipped JSON Schemas and the agent applies them; its
    CSV example imports: the documentation cannot drift from what the agent reads."""
    schemas = {n: json.loads((SCHEMAS / f"{n}.json").read_text()) for n in ("directory", "directory-delta")}
    registry = Registry().with_resources([(f"{n}.json", Resource.from_contents(s)) for n, s in schemas.items()])
    snapshot_check = jsonschema.Draft202012Validator(schemas["directory"], registry=registry)
    text = DOC.read_text()
    snapshot, delta = (json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S))
    snapshot_check.validate(snapshot)
    jsonschema.Draft202012Validator(schemas["directory-delta"], registry=registry).validate(delta)
    with pytest.raises(jsonschema.ValidationError):
        snapshot_check.validate({**snapshot, "members": [{"id": "x", "roles": ["admin"]}]})
    directory = Directory(open_ledger(load_config(config(tmp_path))), "site-badge-secret-0123456789")
    assert directory.apply_snapshot(snapshot, "docs") == 42
    assert directory.apply_delta(delta, "docs") is True
    assert directory.member("m-2") is None and directory.member("m-3").name == "Zoé"
    (csv,) = re.findall(r"```csv\n(.*?)```", text, re.S)
    (tmp_path / "example.csv").write_text(csv)
    members = read_member_file(tmp_path / "example.csv", 1)["members"]
    assert [m["id"] for m in members] == ["m-1017", "m-2"] and len(members[0]["trainings"]) == 2
    assert members[0]["trainings"][1] == {"class": "laser", "expires": "2027-01-31", "grace_days": 0.0,
                                          "supervised": True}  # fmt: skip
