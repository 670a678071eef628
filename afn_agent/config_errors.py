"""Configuration mistakes said as a fab manager can fix them: the file, the line, the key, what was expected
and what was found; an unknown key with the closest known one. Every mistake at once, not one per try."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
KINDS = {
    "string_type": "a string (in quotes)", "int_type": "a whole number", "float_type": "a number",
    "bool_type": "true or false", "dict_type": "a table", "model_type": "a table", "list_type": "a list",
    "tuple_type": "a list", "int_from_float": "a whole number",
}  # fmt: skip
BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
KEY = re.compile(r"^\s*([A-Za-z0-9_\"'-]+)\s*=")


class Problem:
    """One mistake: where (key path and line) and what."""

    def __init__(self, loc: Loc, text: str, line: int | None = None) -> None:
        self.loc, self.text, self.line = loc, text, line


def dotted(loc: Loc, raw: Any) -> str:
    """('machines', 0, 'baud') -> 'machines[0] (printer-1).baud': a machine named by its id if it has one."""
    out, node = "", raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" ({node['id']})"
        else:
            out += ("." if out else "") + part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys a table at `loc` accepts (by their name in the file), to suggest one for a typo."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        field = next((f for name, f in fields.items() if (f.alias or name) == part), None)
        if field is not None:  # else a name of the user's (a tariff's, a material's): same model below
            current = _model_in(field.annotation)
    fields = getattr(current, "model_fields", None) or {}
    return [f.alias or name for name, f in fields.items()]


def _model_in(annotation: Any) -> Any:
    """The model inside `X | None`, `list[X]` or `dict[str, X]`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ()) or ()):
        if (found := _model_in(arg)) is not None:
            return found
    return None


def from_validation(exc: ValidationError, model: type[BaseModel], raw: Any) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind, given = err["type"], err.get("input")
        if kind == "extra_forbidden":
            table, key = loc[:-1], str(loc[-1])
            known = known_keys(model, table)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
                k for k in known if k.startswith(key) or key.startswith(k)
            ][:1]
            hint = f" (did you mean {close[0]}?)" if close else ""
            out.append(Problem(loc, f"unknown key{hint}"))
        elif kind == "missing":
            out.append(Problem(loc, "is required" + _described(model, loc)))
        elif kind in KINDS:
            out.append(Problem(loc, f"expected {KINDS[kind]}, got {_shown(given)}"))
        elif kind in BOUNDS:
            limit = next(iter(err.get("ctx", {}).values()), "?")
            limit = f"{limit:g}" if isinstance(limit, float) else limit
            out.append(Problem(loc, f"expected a number {BOUNDS[kind]} {limit}, got {_shown(given)}"))
        elif kind == "literal_error":
            out.append(Problem(loc, f"expected {err['ctx']['expected']}, got {_shown(given)}"))
        elif kind == "value_error":
            said = str(err.get("ctx", {}).get("error", err["msg"]))
            out.append(Problem(loc, f"{said}, got {_shown(given)}"))
        elif kind in ("too_short", "too_long"):
            out.append(Problem(loc, f"{err['msg'].replace('List', 'a list').lower()}, got {_shown(given)}"))
        else:
            out.append(Problem(loc, f"{err['msg']}, got {_shown(given)}"))
    return out


def _described(model: type[BaseModel], loc: Loc) -> str:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {}) or {}
        field = next((f for name, f in fields.items() if (f.alias or name) == part), None)
        if field is None:
            return ""
        if part == loc[-1]:
            return f" ({field.description})" if field.description else ""
        current = _model_in(field.annotation)
    return ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def locate(text: str, loc: Loc) -> int | None:
    """The line of `loc` in a TOML file's text: the key's own line, else its table's header (a light reader:
    [table], [[array]] and key = value lines; inline tables point at their key's line)."""
    tables: list[tuple[Loc, int]] = []
    counts: dict[str, int] = {}
    current: Loc = ()
    best: int | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if m := HEADER.match(line):
            parts: list[str | int] = [p.strip().strip("\"'") for p in m.group(2).split(".")]
            if m.group(1) == "[[":
                name = ".".join(str(p) for p in parts)
                index = counts.get(name, -1) + 1
                counts[name] = index
                parts.append(index)
            else:
                parts = _with_indexes(parts, counts)
            current = tuple(parts)
            tables.append((current, n))
            if _prefix(current, loc):
                best = n
            continue
        if (k := KEY.match(line)) and _prefix((*current, k.group(1).strip("\"'")), loc):
            best = n
    return best


def _with_indexes(parts: Sequence[str | int], counts: dict[str, int]) -> list[str | int]:
    """[machines.console] after the second [[machines]] is machines[1].console."""
    out: list[str | int] = []
    for part in parts:
        out.append(part)
        name = ".".join(str(p) for p in out if isinstance(p, str))
        if name in counts:
            out.append(counts[name])
    return out


def _prefix(have: Loc, want: Loc) -> bool:
    return len(have) <= len(want) and tuple(want[: len(have)]) == have


def sentences(problems: list[Problem], file: Path, raw: Any, text: str) -> list[str]:
    """Each problem as one line a person can act on: file, line, key, what."""
    out = []
    for p in problems:
        line = p.line if p.line is not None else locate(text, p.loc)
        where = f"{file}: line {line}: " if line else f"{file}: "
        sep = " " if p.text.startswith("is required") else ": "
        out.append(f"{where}{dotted(p.loc, raw)}{sep}{p.text}" if p.loc else f"{where}{p.text}")
    return out
