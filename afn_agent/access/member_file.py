"""A small lab's member list, as a spreadsheet saves it: CSV with `,` or `;` (French Excel's default),
UTF-8 with or without a byte-order mark or Windows-1252, dates as `2027-12-31` or `31/12/2027`, or the
XLSX file itself. One row per member and training (docs/members.md); every wrong cell is reported at once
with its line and column, and nothing is imported while one is.

The first round read only UTF-8 with commas: a French export failed with "missing column(s) member_id"
(a BOM stuck to the first header, or `;` making the header one column) and `31/12/2027` was refused.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .directory import ROLES, DirectoryError

COLUMNS = ("member_id", "name", "roles", "badge_uid", "class", "expires", "grace_days", "supervised")
REQUIRED = ("member_id", "badge_uid")
YES = {"1", "yes", "true", "oui", "vrai", "x"}
NO = {"", "0", "no", "false", "non", "faux"}
MAX_PROBLEMS = 20


def load_snapshot_file(path: str | Path, version: int) -> dict[str, Any]:
    """A directory snapshot from a file: a member list (.csv, .xlsx) or the booking system's JSON."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".xlsx", ".xlsm", ".txt"):
        return read_member_file(path, version)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DirectoryError(f"{path.name}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DirectoryError(f"{path.name}: expected a JSON object (docs/members.md)")
    return doc


def read_member_file(path: str | Path, version: int) -> dict[str, Any]:
    """A directory snapshot from a CSV or XLSX member list (DirectoryError listing every problem)."""
    path = Path(path)
    rows = _xlsx_rows(path) if path.suffix.lower() in (".xlsx", ".xlsm") else _csv_rows(path)
    return snapshot(path.name, rows, version)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Excel's "CSV UTF-8") is not part of the first header
    except UnicodeDecodeError:
        text = raw.decode("cp1252")  # Excel's plain "CSV" on a French Windows
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)  # the header has no quoted separators in practice
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise DirectoryError(f"{path.name}: the file is empty")
    names = [_column(h) for h in header]
    _check_header(path.name, names)
    for row in reader:
        if any(cell.strip() for cell in row):
            yield reader.line_num, dict(zip(names, (cell.strip() for cell in row), strict=False))


def _xlsx_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several kinds for a file that is not a workbook
        raise DirectoryError(f"{path.name}: not an XLSX workbook ({exc})") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        raise DirectoryError(f"{path.name}: the first sheet is empty")
    names = [_column(str(h or "")) for h in header]
    _check_header(path.name, names)
    for n, values in enumerate(rows, start=2):
        cells = [_cell(v) for v in values]
        if any(cells):
            yield n, dict(zip(names, cells, strict=False))
    book.close()


def _cell(value: Any) -> str:
    """A spreadsheet cell as text: a date as ISO, a whole number without `.0`."""
    if isinstance(value, datetime | date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _column(header: str) -> str:
    return header.strip().lower().replace(" ", "_")


def _check_header(name: str, names: list[str]) -> None:
    problems = [f"{name}: missing column {c}" for c in REQUIRED if c not in names]
    for column in names:
        if column and column not in COLUMNS:
            close = difflib.get_close_matches(column, COLUMNS, 1)
            hint = f" (did you mean {close[0]}?)" if close else f" (columns: {', '.join(COLUMNS)})"
            problems.append(f"{name}: unknown column {column!r}{hint}")
    if problems:
        raise DirectoryError("; ".join(problems))


def snapshot(name: str, rows: Iterator[tuple[int, dict[str, str]]], version: int) -> dict[str, Any]:
    members: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for line, row in rows:
        where = f"{name} line {line}"
        try:
            _add(members, row, where)
        except DirectoryError as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise DirectoryError("; ".join(problems[:MAX_PROBLEMS]) + more + "; nothing was imported")
    return {"version": version, "members": list(members.values()), "bookings": []}


def _add(members: dict[str, dict[str, Any]], row: dict[str, str], where: str) -> None:
    mid = row.get("member_id", "")
    if not mid:
        raise DirectoryError(f"{where}, column member_id: empty")
    roles = (row.get("roles") or "member").replace(",", " ").split()
    if bad := [r for r in roles if r not in ROLES]:
        raise DirectoryError(f"{where}, column roles: {' '.join(bad)!r} is not one of {', '.join(ROLES)}")
    m = members.setdefault(mid, {"id": mid, "name": row.get("name") or mid, "badges": [], "trainings": [],
                                 "roles": roles})  # fmt: skip
    uid = row.get("badge_uid", "").replace(" ", "").replace(":", "")
    if uid and uid not in m["badges"]:
        m["badges"].append(uid)
    if row.get("class"):
        m["trainings"].append({"class": row["class"], "expires": _date(row.get("expires", ""), where),
                               "grace_days": _number(row.get("grace_days", ""), where),
                               "supervised": _yes(row.get("supervised", ""), where)})  # fmt: skip


def _date(text: str, where: str) -> str | None:
    """`2027-12-31` or `31/12/2027` (the day first, as in France); empty: no expiry."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y-%m-%d")
        except ValueError:
            continue
    raise DirectoryError(f"{where}, column expires: {text!r} is not a date (2027-12-31 or 31/12/2027)")


def _number(text: str, where: str) -> float:
    try:
        value = float(text.replace(",", ".")) if text else 0.0
    except ValueError:
        raise DirectoryError(f"{where}, column grace_days: {text!r} is not a number of days") from None
    if not 0 <= value <= 3650:
        raise DirectoryError(f"{where}, column grace_days: {text!r} is outside 0 to 3650 days")
    return value


def _yes(text: str, where: str) -> bool:
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise DirectoryError(f"{where}, column supervised: {text!r} is not yes or no (oui/non, 1/0)")
