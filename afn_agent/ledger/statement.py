"""A month's statement, for a lab without a booking system: what each member and each machine used and
owes, from the usage records alone (their own prices, summed as decimals: the totals equal the ledger's
to the cent), as two CSV files and a printable HTML page in the manager's language.

The month is the agent's local calendar month (a job that ended at 00:30 on the 1st, local time, belongs
to that month even when it is still the 31st in UTC).
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import i18n
from .store import Ledger
from .usage import iso

UNOWNED = "-"  # a record without a member (a shared key's upload nobody claimed, a CLI job)


@dataclass
class Line:
    """One member's or one machine's month: counts, times, material, and what it costs per currency."""

    key: str
    jobs: int = 0
    total_s: float = 0.0
    active_s: float = 0.0
    material_g: float = 0.0
    beam_on_s: float = 0.0
    spindle_on_s: float = 0.0
    amounts: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, record: dict[str, Any]) -> None:
        self.jobs += 1
        self.total_s += record["time_s"]["total_s"]
        self.active_s += record["time_s"]["active_s"]
        self.material_g += record["material_total"]["g"]
        self.beam_on_s += record["beam_on_s"]
        self.spindle_on_s += record["spindle_on_s"]
        self.amounts[record["currency"]] += Decimal(record["price"])


@dataclass
class Statement:
    month: str  # YYYY-MM
    since: str  # the month's bounds as the ledger writes times (UTC)
    until: str
    members: dict[str, Line]
    machines: dict[str, Line]
    total: Line


def month_bounds(month: str) -> tuple[str, str]:
    """`2026-11` -> the local month's first instant and the next month's, in the ledger's UTC ISO form."""
    try:
        start = datetime.strptime(month, "%Y-%m")
    except ValueError:
        raise ValueError(f"--month: expected a month like 2026-11, got {month!r}") from None
    year, number = divmod(start.year * 12 + start.month, 12)  # the next month (December: January)
    end = start.replace(year=year, month=number + 1)
    return iso(start.astimezone()), iso(end.astimezone())


def statement(ledger: Ledger, month: str) -> Statement:
    since, until = month_bounds(month)
    members: dict[str, Line] = {}
    machines: dict[str, Line] = {}
    total = Line("TOTAL")
    for record in ledger.usage_between(since, until):
        member = record["member_id"] or UNOWNED
        members.setdefault(member, Line(member)).add(record)
        machine = record["machine"]["id"]
        machines.setdefault(machine, Line(machine)).add(record)
        total.add(record)
    by_member, by_machine = dict(sorted(members.items())), dict(sorted(machines.items()))
    return Statement(month, since, until, by_member, by_machine, total)


COLUMNS = ("jobs", "hours", "active_hours", "material_g", "beam_on_min", "spindle_on_min", "amount",
           "currency")  # fmt: skip


def _rows(line: Line) -> list[list[str]]:
    """A line's CSV rows: one per currency it was billed in (one, in a lab with one tariff currency)."""
    figures = [str(line.jobs), f"{line.total_s / 3600:.2f}", f"{line.active_s / 3600:.2f}",
               f"{line.material_g:.1f}", f"{line.beam_on_s / 60:.1f}", f"{line.spindle_on_s / 60:.1f}"]
    amounts = line.amounts or {"": Decimal(0)}
    return [[line.key, *figures, f"{amount:.2f}", currency] for currency, amount in sorted(amounts.items())]


def to_csv(lines: dict[str, Line], first: str, total: Line) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([first, *COLUMNS])
    for line in lines.values():
        writer.writerows(_rows(line))
    writer.writerows(_rows(total))
    return out.getvalue()


def to_html(s: Statement, site: str, lang: str) -> str:
    """A printable page (A4, no script, no external file) with both tables and the month's total."""
    t = i18n.texts(lang, "report.")
    heads = [t["report.jobs"], t["report.hours"], t["report.material"], t["report.beam"], t["report.spindle"],
             t["report.amount"]]  # fmt: skip

    def table(title: str, first: str, lines: dict[str, Line]) -> str:
        body = "".join(_html_row(line, line.key, lang) for line in lines.values())
        body += _html_row(s.total, t["report.total"], lang, "th")
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in (first, *heads))
        head = f"<h2>{html.escape(title)}</h2><table><thead><tr>{cells}</tr></thead>"
        return f"{head}<tbody>{body}</tbody></table>"

    title = i18n.text("report.title", lang, site=site, month=s.month)
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(i18n.text('report.basis', lang, since=s.since, until=s.until))}</p>"
        + table(t["report.by-member"], t["report.member"], s.members)
        + table(t["report.by-machine"], t["report.machine"], s.machines)
        + "</body></html>\n"
    )


def _html_row(line: Line, label: str, lang: str, tag: str = "td") -> str:
    amounts = " + ".join(i18n.money(a, c, lang) for c, a in sorted(line.amounts.items())) or "–"
    n = i18n.number
    cells = [label, str(line.jobs), n(line.total_s / 3600, lang, 2), n(line.material_g, lang) + " g",
             n(line.beam_on_s / 60, lang), n(line.spindle_on_s / 60, lang), amounts]  # fmt: skip
    return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"


STYLE = """@page { size: A4; margin: 15mm; }
body { font: 10pt sans-serif; color: #111; } h1 { font-size: 14pt; }
h2 { font-size: 12pt; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; } th, td { border: 1px solid #999; padding: 3px 6px; }
td:not(:first-child), th:not(:first-child) { text-align: right; } tbody th { background: #eee; }"""


def write(s: Statement, out_dir: Path, site: str, lang: str) -> list[Path]:
    """The members' CSV, the machines' CSV and the printable page, in `out_dir`; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        f"statement-{s.month}-members.csv": to_csv(s.members, "member_id", s.total),
        f"statement-{s.month}-machines.csv": to_csv(s.machines, "machine", s.total),
        f"statement-{s.month}.html": to_html(s, site, lang),
    }
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / name for name in files]
