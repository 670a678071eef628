"""What must exist before the agent runs: the config's files, devices, GPIO lines, hosts and its data
directory. `load_config` checks types and shapes; this checks the machine it is about to run on.

Each of these once ended in a traceback, or worse in an agent that started and quietly did nothing
(a missing machine port: the machine stayed disconnected). `check-config` and `run` both call
`problems()`; `run` refuses to start while any is left (`--wait-for-ports` lets ports come later).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import ssl
from pathlib import Path

from .config import AgentConfig


def problems(cfg: AgentConfig, ports: bool = True) -> list[str]:
    """Every problem found, each a sentence naming the file, the key and what to do."""
    where = str(cfg.path)
    out = _data_dir(cfg, where)
    for i, m in enumerate(cfg.machines):
        key = f"{where}: machines[{i}] ({m.id})"
        if ports and m.port and not m.wait_for_port and not Path(m.port).exists():
            out.append(
                f"{key}.port: {m.port} does not exist (is it plugged in? `afn-agent ports` lists what is; "
                "`wait_for_port = true` on this machine, or `run --wait-for-ports`, waits for it)"
            )
        if m.reader:
            out += _reader(m.reader, f"{key}.reader")
        if m.interlock and m.interlock != "sim":
            out += _interlock(m.interlock, f"{key}.interlock")
        for name in ("power", "extraction"):
            spec = getattr(m, name)
            if spec and spec.startswith("gpio:"):
                out += _interlock(spec, f"{key}.{name}")  # a relay's line is checked as an input's is
            elif spec and spec.startswith("shelly:"):
                out += _host(spec.split(":")[1].split("#")[0], f"{key}.{name}")
        if m.camera is not None and shutil.which("ffmpeg") is None:
            out.append(f"{key}.camera: pictures are taken with ffmpeg, which is not installed "
                       "(`sudo apt install ffmpeg`)")  # fmt: skip
        if m.camera is not None and m.camera.device and not Path(m.camera.device).exists():
            out.append(f"{key}.camera.device: {m.camera.device} does not exist (`v4l2-ctl --list-devices`)")
    if cfg.broker is not None:
        out += _tls(cfg, where)
    if cfg.api is not None:
        out += _host(cfg.api.host, f"{where}: [api].host")
    return out


def _data_dir(cfg: AgentConfig, where: str) -> list[str]:
    """The data directory, or the nearest directory above it that exists, must be writable by us
    (nothing is created here: check-config only looks)."""
    path = cfg.data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    if path.is_dir() and os.access(path, os.W_OK | os.X_OK):
        return []
    why = "is not a directory" if not path.is_dir() else "is not writable by this user"
    return [f"{where}: [agent].data_dir: {cfg.data_dir} cannot be created or written ({path} {why}); "
            "the ledger and the job files live there"]  # fmt: skip


def _reader(spec: str, key: str) -> list[str]:
    kind, _, arg = spec.partition(":")
    if kind in ("uart", "evdev"):
        device = arg.partition("@")[0]
        if not Path(device).exists():
            return [f"{key}: {device} does not exist (is the reader plugged in?)"]
        if not os.access(device, os.R_OK):
            return [
                f"{key}: {device} is not readable by this user (the unit adds the input and dialout groups)"
            ]
    if kind == "evdev" and importlib.util.find_spec("evdev") is None:
        return [f"{key}: evdev readers need the evdev package (pip install evdev)"]
    if kind == "pcsc" and importlib.util.find_spec("smartcard") is None:
        return [f"{key}: PC/SC readers need the pyscard package (pip install pyscard) and pcscd"]
    return []


def _interlock(spec: str, key: str) -> list[str]:
    chip, line = spec.split(":")[1:3]
    path = Path(chip if chip.startswith("/dev/") else f"/dev/{chip}")
    if not path.exists():
        chips = sorted(p.name for p in Path("/dev").glob("gpiochip*"))
        return [f"{key}: no GPIO chip {path} (this host has: {', '.join(chips) or 'none'})"]
    if importlib.util.find_spec("gpiod") is None:
        return [f"{key}: GPIO lines need the gpiod package (pip install gpiod)"]
    import gpiod

    try:
        with gpiod.Chip(str(path)) as c:
            lines = c.get_info().num_lines
    except OSError as exc:
        return [f"{key}: {path} cannot be opened ({exc.strerror}; the unit adds the gpio group)"]
    if int(line) >= lines:
        return [f"{key}: {path} has lines 0 to {lines - 1}, not {line}"]
    return []


def _tls(cfg: AgentConfig, where: str) -> list[str]:
    b = cfg.broker
    assert b is not None
    out = []
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(b, name)
        if value and not Path(value).is_file():
            out.append(f"{where}: [broker].{name}: {value} does not exist")
    if b.tls and not out:
        try:
            context = ssl.create_default_context(cafile=b.ca_file)
            if b.cert_file:
                context.load_cert_chain(b.cert_file, b.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            out.append(f"{where}: [broker] TLS files cannot be used: {exc}")
    return out


def _host(host: str, key: str) -> list[str]:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        return [f"{key}: {host!r} does not resolve to an address here ({exc})"]
    return []
