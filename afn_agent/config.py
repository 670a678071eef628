"""The agent's TOML configuration, validated on load: every error names the file, the key and what
was expected, so a fab manager can fix it without reading code."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .camera import CameraSettings
from .config_errors import Problem, from_validation, sentences
from .config_model import AgentFile, DirectoryTable, MachineTable, NotifyTable
from .console_config import ConsoleSettings
from .firmware.profile import ProfileError, load_profile
from .ledger.tariff import Tariff
from .materials import BUILT_IN, Material, key, tariff_with

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class MachineConfig:
    id: str
    machine_class: str
    profile: str
    port: str
    baud: int | None = None
    tariff: str = "default"
    material: str = "filament"  # what is loaded when the agent starts: a preset's name, or a plain label
    hold_uploads: bool = True  # jobs from slicers wait for their owner's badge
    reader: str | None = None  # badge reader: evdev:<path> | uart:<port>[@baud] | pcsc[:<name>] | sim
    booking_required: bool = False
    confirm_clear: bool = False  # after a job, someone confirms the bed is cleared before the next
    start_on_badge: bool = True  # held jobs start at badge-in; false: the member presses Start on the kiosk
    claim_uploads: bool = True  # a member at the machine may claim an upload sent with a shared key
    power: str | None = None  # its power switch: sim | gpio:… | tasmota:<topic> | shelly:<host>[#id]
    power_safe: str = "open"  # switch unreachable: closed (no session, no job) | open (run without it)
    power_after_s: float = 0.0  # power (or extraction) stays on this long after a job or session
    power_cool_c: float = 50.0  # a printer stays powered until its hotend is below this
    busy_w: float = 20.0  # a power-only machine is busy while its plug reads above this
    power_poll_s: float = 1.0  # how often the plug is read
    extraction: str | None = None  # a laser's extraction/chiller switch: on in use and power_after_s after
    interlock: str | None = None  # gpio:<chip>:<line>[:active_high] | sim — lid, door or extraction switch
    session_end: str = "finish"  # when the session must end mid-job: finish | pause | stop
    wait_for_port: bool = (
        False  # its port may be absent when the agent starts (a board powered with the machine)
    )
    console: ConsoleSettings = field(default_factory=ConsoleSettings)  # jog, probe, preheat, language
    camera: CameraSettings | None = None  # pictures at a job's start, end, fault and on demand


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    nodes: tuple[str, ...] = ()  # other nodes of a clustered broker, host[:port], tried in order after host
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    telemetry_hz: float = 1.0
    topic_prefix: str = "afn/v1"
    command_secret: str | None = None
    home_assistant: bool = False
    home_assistant_buttons: bool = False  # pause/resume/cancel from HA, on a topic only HA may write (ACL)
    protocol: str = "auto"  # auto (MQTT 5, else 3.1.1) | 5 | 3.1.1
    session: str = "persistent"  # persistent | clean (the broker keeps nothing; subscriptions at QoS 0)
    status_every_s: float = 0.0  # also re-send the retained status this often (0: on changes and connects)
    required: bool = False  # unreachable at start: refuse to run (exit 8) rather than run on the outbox


@dataclass(frozen=True)
class AccessConfig:
    badge_secret: str
    cache_max_age_days: float = 7.0
    managers_always: bool = True
    supervisor_window_s: float = 120.0
    session_idle_s: float = 900.0
    opening_hours: dict[str, tuple[time, time]] = field(default_factory=dict)
    sync_url: str | None = None
    sync_token: str | None = None
    sync_every_s: float = 300.0
    debounce_s: float = 2.0  # the same card read again within this is the same read


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str  # slicer | manager | booking
    sha256: str  # of the key; the key itself is never stored
    member: str | None = None  # a slicer key of one member: uploads are that member's
    machines: tuple[str, ...] = ()  # empty: every machine
    quota_mb: float | None = None  # its jobs' files in the spool at once ([api] key_quota_mb if unset)

ANY_HOST = ("0.0.0.0", "::", "")  # [api] host values that mean "every interface", not an address to reach


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    keys: tuple[ApiKey, ...] = ()
    max_upload_mb: float = 200.0
    octoprint_machine: str | None = None  # the machine behind /api/… (others: /octoprint/<id>/api/…)
    kiosk_loopback: bool = True  # the screen beside the machine (a browser on this host) acts for sessions
    announce: bool = True  # slicers find each machine (mDNS _octoprint._tcp)
    announce_on: tuple[str, ...] = ()  # IPv4 addresses to announce on (empty: every interface)
    metrics_public: bool = True
    max_connections: int = 256  # open at once, in all (lowered to leave fds for machines and the ledger)
    max_connections_per_client: int = 32
    header_timeout_s: float = 10.0  # a request's headers must be complete this long after its first byte
    body_timeout_s: float = 30.0  # a request body may pause this long
    key_quota_mb: float = 500.0  # each key's jobs' files in the spool at once


@dataclass(frozen=True)
class SafetyConfig:
    idle_heat_s: float = 600.0  # heaters on, no job, no session activity: heaters off after this
    session_warn_s: float = 600.0  # warn this long before a session must end during a job


@dataclass(frozen=True)
class SpoolConfig:
    """How much job files may take: uploads fill the disk otherwise (a slicer key once filled it)."""

    keep_h: float = 0.0  # a job's file stays this long after the job ends (0: removed as it ends)
    quota_mb: float = 2000.0  # all job files together
    min_free_mb: float = 50.0  # an upload that would leave less free space on the disk is refused




@dataclass(frozen=True)
class BookingConfig:
    """Who takes the usage records: `mqtt` (a booking system acknowledges each on the broker; resent until
    it does), `pull` (it fetches and acknowledges them over HTTP: GET /v1/usage, POST /v1/usage/ack) or
    `none` (a lab without one: records are kept, exported and reported, awaited by nobody, never resent)."""

    mode: str = "none"


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    site: str
    agent_id: str
    data_dir: Path
    checkpoint_s: float = 2.0
    machines: tuple[MachineConfig, ...] = ()
    tariffs: dict[str, Tariff] = field(default_factory=dict)
    broker: BrokerConfig | None = None
    access: AccessConfig | None = None
    api: ApiConfig | None = None
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    spool: SpoolConfig = field(default_factory=lambda: SpoolConfig())
    materials: dict[str, Material] = field(default_factory=lambda: dict(BUILT_IN))
    stop_grace_s: float = 600.0  # a stop waits this long for running jobs to end (TimeoutStopSec above it)
    booking: BookingConfig = field(default_factory=BookingConfig)
    directory: DirectoryTable | None = None  # members pulled from a booking system (fab-manager)
    notify: NotifyTable | None = None  # notifications through Apprise

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "jobs"

    def find(self, machine_id: str) -> MachineConfig | None:
        return next((m for m in self.machines if m.id == machine_id), None)

    def machine(self, machine_id: str) -> MachineConfig:
        if (m := self.find(machine_id)) is not None:
            return m
        known = ", ".join(m.id for m in self.machines)
        raise ConfigError(f"{self.path}: no machine {machine_id!r} (configured: {known})")

    def api_config(self) -> ApiConfig:
        """The [api] table, for the code that runs only when there is one."""
        if self.api is None:
            raise ConfigError(f"{self.path}: no [api] table")
        return self.api

    def preset(self, name: str | None) -> Material | None:
        """The material preset of that name (any case), None for a plain label."""
        return self.materials.get(key(name)) if name else None

    def tariff_for(self, machine_id: str, material: Material | None = None) -> Tariff:
        """The tariff a machine's jobs are priced by, with the material's price per kg when its preset
        has one: the one place that looks it up."""
        m = self.find(machine_id)
        return tariff_with(self.tariffs[m.tariff if m else "default"], material)


def read_toml(file: Path) -> tuple[dict[str, Any], str]:
    """A TOML file's tables and its text, or a ConfigError naming the file and what is wrong with it."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 "
            "(save the file as UTF-8; Latin-1 accents are the usual cause)"
        ) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def validated(model: type[M], file: Path) -> tuple[M | None, dict[str, Any], str, list[Problem]]:
    """The file read against its model: the model (None if invalid), the raw tables, the text, problems."""
    raw, text = read_toml(file)
    try:
        return model.model_validate(raw), raw, text, []
    except ValidationError as exc:
        return None, raw, text, from_validation(exc, model, raw)


def load_config(path: str | Path) -> AgentConfig:
    """The agent's configuration; a ConfigError lists every mistake in the file at once."""
    file = Path(path)
    model, raw, text, found = validated(AgentFile, file)
    found += cross_checks(raw)
    if model is None or found:
        raise ConfigError("\n".join(sentences(found, file, raw, text)))
    return _runtime(model, file)


def _runtime(f: AgentFile, file: Path) -> AgentConfig:
    """A validated file as the agent's frozen runtime configuration."""
    a = f.agent
    data_dir = Path(a.data_dir)
    if not data_dir.is_absolute():
        data_dir = (file.parent / data_dir).resolve()
    tariffs = {"default": Tariff()}
    for name, table in f.tariffs.items():
        tariffs[name] = Tariff.from_snapshot({"name": name, **table.model_dump()}, where=f"tariffs.{name}")
    materials = dict(BUILT_IN)
    for name, m in f.materials.items():
        materials[key(name)] = Material(
            name=key(name), density_g_cm3=m.density_g_cm3,
            price_per_kg=Decimal(str(m.price_per_kg)) if m.price_per_kg is not None else None,
            nozzle_c=_pair(m.nozzle_c), bed_c=_pair(m.bed_c),
        )  # fmt: skip
    machines = tuple(_machine(m) for m in f.machines)
    broker = broker_config(f.broker) if f.broker else None
    access = None
    if f.access is not None:
        hours = {day: _hours(value) for day, value in f.access.opening_hours.items()}
        access = AccessConfig(**{**f.access.model_dump(), "opening_hours": hours})
    api = None
    if f.api is not None:
        keys = tuple(ApiKey(**{**k.model_dump(), "machines": tuple(k.machines)}) for k in f.api.keys)
        default = f.api.octoprint_machine or (machines[0].id if machines else None)
        api = ApiConfig(**{**f.api.model_dump(), "keys": keys, "octoprint_machine": default,
                           "announce_on": tuple(f.api.announce_on)})  # fmt: skip
    spool = SpoolConfig(keep_h=a.spool_keep_h, quota_mb=a.spool_quota_mb, min_free_mb=a.min_free_mb)
    mode = f.booking.mode or ("mqtt" if broker else "none")
    return AgentConfig(
        file, a.site, a.id, data_dir, a.checkpoint_s, machines, tariffs, broker, access, api,
        SafetyConfig(**f.safety.model_dump()), spool, materials, a.stop_grace_s, BookingConfig(mode),
        f.directory, f.notify,
    )  # fmt: skip


def _machine(m: MachineTable) -> MachineConfig:
    """A machine's keys with the defaults its profile decides: a laser's switch fails closed and keeps
    extraction on 5 minutes."""
    laser = load_profile(m.profile).kind == "laser"
    values = m.model_dump(exclude={"console", "camera", "machine_class"})
    values.update(
        machine_class=m.machine_class, port=m.port or "", console=m.console, camera=m.camera,
        power_safe=m.power_safe or ("closed" if laser else "open"),
        power_after_s=m.power_after_s if m.power_after_s is not None else (300.0 if laser else 0.0),
    )  # fmt: skip
    return MachineConfig(**values)


def _pair(value: Any) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value else None


def _hours(value: str) -> tuple[time, time]:
    opens, closes = value.split("-")
    return time.fromisoformat(opens), time.fromisoformat(closes)


def cross_checks(raw: dict[str, Any]) -> list[Problem]:
    """What no single key can say wrong: names that must exist elsewhere in the file, ids given twice, a
    machine that could never be used. Reads the raw tables defensively: it runs even when types are wrong."""
    out: list[Problem] = []
    machines = [m for m in _list(raw.get("machines")) if isinstance(m, dict)]
    tariffs = {"default", *_dict(raw.get("tariffs"))}
    has = {name: isinstance(raw.get(name), dict) for name in ("broker", "access", "api")}
    ids: dict[str, int] = {}
    ports: dict[str, int] = {}
    readers: dict[str, int] = {}
    for i, m in enumerate(machines):
        out += _machine_checks(i, m, tariffs, has)
        if isinstance(mid := m.get("id"), str):
            if mid in ids:
                out.append(Problem(("machines", i, "id"), f"{mid} is already machines[{ids[mid]}]'s id"))
            ids.setdefault(mid, i)
        for name, seen in (("port", ports), ("reader", readers)):
            value = m.get(name)
            if isinstance(value, str) and value and value != "sim":
                device = value.split(":", 1)[-1].split("@")[0] if name == "reader" else value
                if device in seen:
                    said = (
                        f"{value} is already machines[{seen[device]}]'s {name}: one device serves one machine"
                    )
                    out.append(Problem(("machines", i, name), said))
                seen.setdefault(device, i)
    api = _dict(raw.get("api"))
    for i, k in enumerate(_list(api.get("keys"))):
        for name in _list(_dict(k).get("machines")):
            if isinstance(name, str) and name not in ids:
                out.append(Problem(("api", "keys", i, "machines"), f"no machine {name!r} ({_known(ids)})"))
    if isinstance(op := api.get("octoprint_machine"), str) and op not in ids:
        out.append(Problem(("api", "octoprint_machine"), f"no machine {op!r} ({_known(ids)})"))
    out += _directory_checks(raw, ids, {str(m.get("class")) for m in machines})
    if _dict(raw.get("booking")).get("mode") == "mqtt" and not has["broker"]:
        out.append(Problem(("booking", "mode"), 'mqtt needs a [broker] (or mode = "pull" or "none")'))
    return out


def _directory_checks(raw: dict[str, Any], ids: dict[str, int], classes: set[str]) -> list[Problem]:
    """A pulled directory needs [access] (the badge secret) and names only this file's machines and
    classes."""
    if not isinstance(raw.get("directory"), dict):
        return []
    d, out = raw["directory"], []
    access = raw.get("access")
    if not isinstance(access, dict):
        said = "a directory needs an [access] table (badge_secret and the rules)"
        out.append(Problem(("directory",), said))
    elif access.get("sync_url"):
        said = "[directory] and [access] sync_url both bring members: keep one"
        out.append(Problem(("access", "sync_url"), said))
    for name, ours in _dict(d.get("machines")).items():
        for mid in ours if isinstance(ours, list) else [ours]:
            if isinstance(mid, str) and mid not in ids:
                out.append(Problem(("directory", "machines", name), f"no machine {mid!r} ({_known(ids)})"))
    known = ", ".join(sorted(classes)) or "no machines"
    for name, c in _dict(d.get("trainings")).items():
        if isinstance(c, str) and c not in classes:
            said = f"no machine of class {c!r} (classes: {known})"
            out.append(Problem(("directory", "trainings", name), said))
    return out


def _machine_checks(i: int, m: dict[str, Any], tariffs: set[str], has: dict[str, bool]) -> list[Problem]:
    out = []
    profile = None
    if isinstance(name := m.get("profile"), str):
        try:
            profile = load_profile(name)
        except ProfileError as exc:
            out.append(Problem(("machines", i, "profile"), f"{exc} (`afn-agent profiles` lists them)"))
    if isinstance(t := m.get("tariff"), str) and t not in tariffs:
        out.append(
            Problem(("machines", i, "tariff"), f"no [tariffs.{t}] (defined: {', '.join(sorted(tariffs))})")
        )
    if profile is not None and profile.streamed and not m.get("port"):
        out.append(
            Problem(("machines", i, "port"), "is required (the serial device, e.g. /dev/afn/printer-1)")
        )
    if profile is not None and not profile.streamed and not m.get("power"):
        out.append(Problem(("machines", i, "power"), "is required: the agent does not stream to this machine "
                           "(protocol none), its plug says when it is busy"))  # fmt: skip
    for name in ("power", "extraction"):
        if str(m.get(name, "")).startswith("tasmota:") and not has["broker"]:
            out.append(Problem(("machines", i, name), "a Tasmota switch speaks MQTT: add a [broker]"))
    if has["access"] and not m.get("reader") and m.get("hold_uploads", True) is not False:
        said = ("under [access] a machine needs a badge reader: without one no session opens and its held "
                "uploads wait forever (or hold_uploads = false)")  # fmt: skip
        out.append(Problem(("machines", i, "reader"), said))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _known(ids: dict[str, int]) -> str:
    return f"configured: {', '.join(ids)}" if ids else "no machines configured"


def broker_config(table: Any) -> BrokerConfig:
    """A [broker] table (agent or fleet file) as the frozen settings the bus reads."""
    fields = table.model_dump()
    return BrokerConfig(**{**fields, "nodes": tuple(fields["nodes"])})
