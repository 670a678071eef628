"""The shipped configuration documents, generated from config_model.py so they cannot drift: the JSON
Schemas (editors complete and check the TOML with them: Taplo / Even Better TOML read the `#:schema` line)
and the example agent.toml, every key present and commented (the keys left at their default commented out).

`afn-agent config-files --out deploy` rewrites them; a unit test fails while the shipped ones differ."""

from __future__ import annotations

import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config_model import AgentFile, FleetFile

WIDTH = 110
SCHEMAS: dict[str, type[BaseModel]] = {"agent.schema.json": AgentFile, "fleet.schema.json": FleetFile}

READER_1 = "evdev:/dev/input/by-id/usb-badge-reader-printer-1-event-kbd"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
# The example lab: one Raspberry Pi beside two printers and a laser run from its own software.
EXAMPLE: dict[str, Any] = {
    "agent": {"site": "fablab", "id": "pi-printers", "data_dir": "/var/lib/afn-agent"},
    "tariffs": {
        "printer": {
            "currency": "EUR",
            "per_active_minute": 0.05,
            "per_gram": 0.04,
            "minimum": 0.5,
            "rounding": 0.05,
            "policy": {
                "cancelled": "done_part",
                "fault": "none",
                "offline": "done_part",
                "admin": "none",
                "permission": "done_part",
            },
        }
    },
    "materials": {
        "PLA": {"density_g_cm3": 1.24, "price_per_kg": 25.0, "nozzle_c": [190, 230], "bed_c": [50, 70]},
        "PETG": {"density_g_cm3": 1.27, "price_per_kg": 30.0, "nozzle_c": [220, 250], "bed_c": [70, 90]},
    },
    "machines": [
        {
            "id": "printer-1",
            "class": "fdm-printer",
            "profile": "prusa-mk3",
            "port": "/dev/afn/printer-1",
            "tariff": "printer",
            "material": "PLA",
            "reader": READER_1,
            "start_on_badge": False,
            "confirm_clear": True,
            "console": {"language": "fr", "babystep_training": "fdm-advanced", "filament_mm": 90},
        },
        {
            "id": "printer-2",
            "class": "fdm-printer",
            "profile": "marlin2",
            "port": "/dev/afn/printer-2",
            "tariff": "printer",
            "reader": "uart:/dev/afn/reader-2@9600",
            "interlock": "gpio:gpiochip0:17",
            "wait_for_port": True,
            "power": "tasmota:printer2-plug",
            "power_cool_c": 50,
        },
        {
            "id": "laser-2",
            "class": "laser",
            "profile": "laser-power-only",
            "tariff": "printer",
            "power": "shelly:192.168.10.41",
            "extraction": "gpio:gpiochip0:22",
            "power_after_s": 300,
            "busy_w": 40,
            "power_safe": "closed",
            "reader": "uart:/dev/afn/reader-3@9600",
        },
    ],
    "access": {
        "badge_secret": "replace-with-a-long-random-site-secret",
        "sync_url": "https://booking.example.org/afn/directory",
        "sync_token": "replace-with-the-booking-system-token",
        "opening_hours": {d: "09:00-21:00" for d in WEEKDAYS} | {"sat": "10:00-18:00"},
    },
    "broker": {
        "host": "broker.fablab.lan",
        "port": 8883,
        "tls": True,
        "ca_file": "/etc/afn-agent/ca.crt",
        "username": "pi-printers",
        "password": "replace-with-the-broker-password",
        "command_secret": "replace-with-the-site-command-secret",
    },
    "booking": {"mode": "mqtt"},
    "api": {
        "host": "0.0.0.0",
        "port": 8080,
        "keys": [
            {
                "name": "slicers",
                "role": "slicer",
                "sha256": "6c4e8d4b0f2b8e1b5d0d0b8a2c3e6f1a9b7c5d3e1f0a2b4c6d8e0f1a3b5c7d9e",
            },
            {
                "name": "booking-system",
                "role": "booking",
                "sha256": "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988",
            },
        ],
    },
}
# Tables the example lab does not use, shown commented out with values to start from.
ALTERNATIVES: dict[str, Any] = {
    "notify": {
        "managers": ["mailtos://agent:replace-with-the-password@smtp.example.org?to=fablab@example.org"],
    },
    "directory": {
        "source": "fab-manager",
        "url": "https://fablab.example.org",
        "token": "replace-with-the-open-api-client-token",
        "managers": ["group:staff"],
        "machines": {"imprimante-3d": "printer-1", "4": ["printer-2"], "decoupeuse-laser": "laser-2"},
        "trainings": {"formation-imprimante-3d": "fdm-printer", "2": "laser", "formation-laser": "laser"},
    },
}
NOTES = {
    "machines[1]": "A printer whose board is powered with it, switched by a Tasmota plug (docs/power.md).",
    "machines[2]": "A laser run from its own software (LightBurn): never streamed to, switched and billed by "
    "its plug; extraction and chiller on their own relay.",
}


def schema(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(by_alias=True), indent=2, ensure_ascii=False) + "\n"


def example() -> str:
    """deploy/agent.example.toml."""
    out = [
        "#:schema ./agent.schema.json",
        "# One agent (one Raspberry Pi) beside two printers and a laser. Copy to /etc/afn-agent/agent.toml",
        "# and edit; `afn-agent check-config /etc/afn-agent/agent.toml` says every mistake at once.",
        "# Generated from afn_agent/config_model.py (`afn-agent config-files --out deploy`): every key is",
        "# here; a commented-out key shows its default.",
    ]
    for name, field in AgentFile.model_fields.items():
        model = _model_of(field)
        value = EXAMPLE.get(name)
        if model is None:
            continue
        if _is_list(field):
            for i, item in enumerate(value or [{}]):
                out += _table(f"[[{name}]]", model, item, full=i == 0, note=NOTES.get(f"{name}[{i}]"),
                              prefix=name)  # fmt: skip
        elif _is_dict(field):
            out += ["", *_comment(_describe(field))]
            for key, item in (value or {}).items():
                out += _table(
                    f"[{name}.{key}]",
                    model,
                    item,
                    full=True,
                    prefix=f"{name}.{key}",
                    lead=not out[-1].startswith("#"),
                )
        elif value is None and name in ALTERNATIVES:
            instead = "; instead of [access] sync_url" if name == "directory" else ""
            note = f"{_describe(field)}{instead}, uncomment"
            lines = _table(f"[{name}]", model, ALTERNATIVES[name], full=True, note=note, prefix=name)
            lines = [x for line in lines for x in line.split("\n")]
            out += [x if not x or x.startswith("#") else f"# {x}" for x in lines]
        else:
            out += _table(f"[{name}]", model, value or {}, full=True, note=_describe(field), prefix=name)
    return "\n".join(out) + "\n"


def _table(header: str, model: type[BaseModel], values: dict[str, Any], full: bool, note: str | None = None,
           prefix: str = "", lead: bool = True) -> list[str]:  # fmt: skip
    """A table's lines: its scalar keys, then its sub-tables (which TOML needs after them)."""
    out = [""] if lead or note else []
    if note:
        out += _comment(note)
    out.append(header)
    later: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = _model_of(field)
        if sub is not None and _is_list(field):
            for n, item in enumerate(values.get(key, [])):
                later += _table(f"[[{prefix}.{key}]]", sub, item, full=n == 0, prefix=f"{prefix}.{key}",
                                note=None if n else _describe(field))  # fmt: skip
            if not values.get(key):
                later += [f"# [[{prefix}.{key}]]: {_describe(field)}"]
            continue
        if sub is not None:
            if key in values or full:
                lines = _table(f"[{prefix}.{key}]", sub, values.get(key, {}), full=full,
                               prefix=f"{prefix}.{key}", note=_describe(field))  # fmt: skip
                if key not in values and field.default is None:  # an optional table: shown, not set
                    lines = [f"# {line}" if line.startswith("[") else line for line in lines]
                later += lines
            continue
        if _is_dict(field) and len(values.get(key, {})) > 2:  # a long table reads better as its own table
            later += ["", *_comment(_describe(field)), f"[{prefix}.{key}]"]
            later += [f"{k} = {toml(v)}" for k, v in values.get(key, {}).items()]
            continue
        if key in values:
            out.append(_line(f"{key} = {toml(values[key])}", _describe(field)))
        elif full:
            out.append(_line(f"# {key} = {_default(field)}", _describe(field)))
    return out + later


def _line(text: str, comment: str) -> str:
    """`key = value  # what it is`, the comment above the key when the line would be too long."""
    if not comment:
        return text
    one = f"{text:<29}  # {comment}"
    return one if len(one) <= WIDTH else "\n".join([*_comment(comment), text])


def _comment(text: str) -> list[str]:
    return [f"# {line}" for para in text.splitlines() for line in textwrap.wrap(para, WIDTH - 2)]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return toml(field.default_factory())  # type: ignore[call-arg]
    if field.is_required():
        return f"<{_kind(field.annotation)}>"
    if field.default is not None and field.default is not ...:
        return toml(field.default)
    if field.examples:
        return toml(field.examples[0])
    return f"<{_kind(field.annotation)}>"


def _kind(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    inner = args[0] if args else annotation
    if typing.get_origin(inner) is typing.Annotated:
        inner = typing.get_args(inner)[0]
    if typing.get_origin(inner) is typing.Literal:
        return " | ".join(str(x) for x in typing.get_args(inner))
    return {str: "text", int: "whole number", float: "number", bool: "true | false"}.get(inner, "value")


def _describe(field: FieldInfo) -> str:
    return field.description or ""


def _model_of(field: FieldInfo) -> type[BaseModel] | None:
    """The table model a field holds (itself, in a list, in a dict or optional), else None."""
    stack = [field.annotation]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        stack += list(typing.get_args(t))
    return None


def _origin(field: FieldInfo) -> Any:
    t = field.annotation
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return typing.get_origin(t) or t


def _is_list(field: FieldInfo) -> bool:
    return _origin(field) is list


def _is_dict(field: FieldInfo) -> bool:
    return _origin(field) is dict


def toml(value: Any) -> str:
    """A value as TOML (strings in JSON's escapes, which TOML basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return str(value)


def write(out: Path) -> list[Path]:
    """Every generated document into `out` (deploy/ in the repository)."""
    files = {name: schema(model) for name, model in SCHEMAS.items()} | {"agent.example.toml": example()}
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
