"""A machine's console settings (`[machines.console]`): jog feeds, touch plate, safe height, tool-change
place, framing, preheat and filament, the screen's language. Kept apart from config.py, which reads
them through `console_settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class ConsoleSettings:
    language: str = "fr"  # the screen's language until the member switches it
    jog_feed: float = 1000.0  # mm/min, X/Y
    jog_feed_z: float = 300.0
    jog_steps: tuple[float, ...] = (0.1, 1.0, 10.0)
    plate_mm: float = 20.0  # the touch plate's thickness
    probe_feed: float = 50.0  # mm/min
    probe_depth: float = 30.0  # how far down a probe looks for the plate before it fails
    retract_mm: float = 5.0  # above the plate after a probe
    safe_z: float | None = None  # machine Z for rapid moves (default: 1 mm below the top of travel)
    tool_change: dict[str, float] = field(default_factory=dict)  # machine X/Y(/Z) where tools are changed
    frame_feed: float = 1500.0
    frame_power: float = 0.0  # a laser traces the box at this S (0: beam off)
    filament_mm: float = 80.0  # load / unload length
    filament_feed: float = 300.0
    min_extrude_c: float = 170.0  # below this a load or unload is refused (cold extrusion)
    raise_mm: float = 10.0
    babystep_training: str | None = None  # the training that allows babysteps (None: anyone in a session)
    babystep_until_layer_s: float = 600.0  # babysteps only in a job's first minutes (first layers)


def console_settings(table: Any) -> ConsoleSettings:
    """Read a `console` table through config.py's checked reader (`table.get(key, type, default, check,
    hint)`), so each error names the file, the machine and the key."""
    number = (int, float)
    positive = lambda v: v > 0  # noqa: E731
    d = ConsoleSettings()
    steps = table.get("jog_steps", list, list(d.jog_steps), lambda v: 0 < len(v) <= 6 and all(map(_pos, v)),
                      "up to 6 positive numbers")  # fmt: skip
    place = table.get("tool_change", dict, {},
                      lambda v: set(v) <= {"X", "Y", "Z"} and all(_num(x) for x in v.values()),
                      "a table of X, Y, Z numbers (machine coordinates)")  # fmt: skip
    return ConsoleSettings(
        language=table.get("language", str, d.language, LANGUAGES.__contains__, "fr or en"),
        jog_feed=float(table.get("jog_feed", number, d.jog_feed, positive, "above 0 mm/min")),
        jog_feed_z=float(table.get("jog_feed_z", number, d.jog_feed_z, positive, "above 0 mm/min")),
        jog_steps=tuple(float(s) for s in steps),
        plate_mm=float(table.get("plate_mm", number, d.plate_mm, lambda v: 0 <= v <= 100, "0-100 mm")),
        probe_feed=float(table.get("probe_feed", number, d.probe_feed, lambda v: 0 < v <= 500, "1-500")),
        probe_depth=float(table.get("probe_depth", number, d.probe_depth, positive, "above 0 mm")),
        retract_mm=float(table.get("retract_mm", number, d.retract_mm, positive, "above 0 mm")),
        safe_z=_opt_float(table.get("safe_z", number, None)),
        tool_change={k: float(v) for k, v in place.items()},
        frame_feed=float(table.get("frame_feed", number, d.frame_feed, positive, "above 0 mm/min")),
        frame_power=float(table.get("frame_power", number, d.frame_power, lambda v: v >= 0, "0 or more")),
        filament_mm=float(table.get("filament_mm", number, d.filament_mm, lambda v: 0 < v <= 800, "1-800")),
        filament_feed=float(table.get("filament_feed", number, d.filament_feed, positive, "above 0")),
        min_extrude_c=float(table.get("min_extrude_c", number, d.min_extrude_c, positive, "above 0 °C")),
        raise_mm=float(table.get("raise_mm", number, d.raise_mm, lambda v: 0 < v <= 100, "1-100 mm")),
        babystep_training=table.get("babystep_training", str, None),
        babystep_until_layer_s=float(
            table.get("babystep_until_layer_s", number, d.babystep_until_layer_s, positive, "above 0 s")
        ),
    )


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _pos(v: Any) -> bool:
    return _num(v) and v > 0


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)
