"""Shared test helpers: profiles with overrides, and reading framed lines back."""

from __future__ import annotations

import re
from dataclasses import replace

from afn_agent.firmware.profile import Profile, load_profile

FRAMED = re.compile(rb"N(\d+) (.*?)\*(\d+)\n")


def profile(name: str = "marlin2", **link_or_timeouts) -> Profile:
    """A shipped profile with some [link] or [timeouts] fields changed."""
    p = load_profile(name)
    link = {k: v for k, v in link_or_timeouts.items() if hasattr(p.link, k)}
    timeouts = {k: v for k, v in link_or_timeouts.items() if hasattr(p.timeouts, k)}
    unknown = set(link_or_timeouts) - set(link) - set(timeouts)
    assert not unknown, unknown
    return replace(p, link=replace(p.link, **link), timeouts=replace(p.timeouts, **timeouts))


def framed(data: bytes) -> list[tuple[int, str]]:
    """(line number, command) of every framed line in `data`."""
    return [(int(n), cmd.decode()) for n, cmd, _ in FRAMED.findall(data)]


PRINTER_TARIFF = """
[tariffs.printer]
currency = "EUR"
per_active_minute = 0.10
per_heating_minute = 0.02
per_gram = 0.05
minimum = 0.50
rounding = 0.05
policy = { cancelled = "done_part", fault = "none", offline = "done_part", admin = "none" }

[tariffs.laser]
currency = "EUR"
per_beam_minute = 0.80
per_active_minute = 0.05
rounding = 0.01
policy = { cancelled = "full" }
"""


def write_config(
    path,
    machines: list[dict],
    site: str = "fablab",
    agent_id: str = "pi-printers",
    broker: dict | None = None,
    checkpoint_s: float = 1.0,
):
    """An agent TOML file: machines as dicts of [[machines]] keys, tariffs `printer` and `laser`."""
    from pathlib import Path

    path = Path(path)
    out = [f'[agent]\nsite = "{site}"\nid = "{agent_id}"\ndata_dir = "{path.parent / "data"}"']
    out.append(f"checkpoint_s = {checkpoint_s}\n")
    out.append(PRINTER_TARIFF)
    for m in machines:
        out.append("[[machines]]")
        out.extend(f"{k} = {_toml(v)}" for k, v in m.items())
        out.append("")
    if broker:
        out.append("[broker]")
        out.extend(f"{k} = {_toml(v)}" for k, v in broker.items())
    path.write_text("\n".join(out) + "\n")
    return path


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):  # an inline table: `console = { plate_mm = 15, tool_change = { X = -5 } }`
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


KEYS = {"slicer": "slicer-key-0123456789", "manager": "manager-key-0123456789", "booking": "booking-key-0123456789",
        "ana-slicer": "ana-slicer-key-0123456789"}  # fmt: skip


def api_table(max_upload_mb: float = 50.0, port: int = 0, extra: str = "", announce: bool = False) -> str:
    """An [api] table with a key per role (KEYS), listening on a free loopback port by default; machines
    announced over mDNS only when a test asks (test_announce.py)."""
    import hashlib

    def h(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    return f"""
[api]
host = "127.0.0.1"
port = {port}
max_upload_mb = {max_upload_mb}
announce = {"true" if announce else "false"}
{extra}

[[api.keys]]
name = "slicers"
role = "slicer"
sha256 = "{h(KEYS["slicer"])}"

[[api.keys]]
name = "ana-laptop"
role = "slicer"
member = "ana"
sha256 = "{h(KEYS["ana-slicer"])}"

[[api.keys]]
name = "manager-max"
role = "manager"
sha256 = "{h(KEYS["manager"])}"

[[api.keys]]
name = "booking-system"
role = "booking"
sha256 = "{h(KEYS["booking"])}"
"""


def profile_file(tmp_path, base: str, **sections) -> str:
    """A shipped profile with some fields changed, written as a TOML file the config can name:
    profile_file(tmp, "marlin2", timeouts={"ok_s": 1.0}) -> path."""
    import tomllib
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "firmware_profiles" / f"{base}.toml"
    data = tomllib.loads(src.read_text())
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    out = []
    for section, table in data.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        out.append("")
    path = Path(tmp_path) / f"{base}-test.toml"
    path.write_text("\n".join(out))
    return str(path)


def _toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml(v)


def wait_for(predicate, timeout: float, what: str):
    """Poll until `predicate()` is truthy and return its value; fail naming what never happened."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def grbl_at_rest(m, timeout: float = 10.0, gap_s: float = 0.3) -> None:
    """A GRBL machine Idle with nothing of ours unanswered, in two looks `gap_s` apart: one status poll is
    0.25 s, so the first look may predate the move just sent (real grbl-sim lags: give it a longer gap)."""
    import time

    def idle() -> bool:
        return m.grbl_state == "Idle" and m.driver.core.oldest_unanswered() is None

    def twice() -> bool:
        if not idle():
            return False
        time.sleep(gap_s)  # real time: longer than one status poll
        return idle()

    wait_for(twice, timeout, "the controller at rest")


def under_way(machine, lines: int = 50, timeout: float = 15.0) -> int:
    """Wait until a machine's running job has `lines` answered; returns how many it has."""
    return wait_for(
        lambda: (n := machine.snapshot()["lines_acked"]) >= lines and n, timeout, f"{lines} lines answered"
    )
