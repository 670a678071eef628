"""The agent's TOML configuration, validated on load: every error names the file, the key and what
was expected, so a fab manager can fix it without reading code."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from .console_config import ConsoleSettings, console_settings
from .firmware.profile import ProfileError, load_profile
from .ledger.tariff import Tariff, TariffError
from .materials import BUILT_IN, Material, key, tariff_with
from .power.spec import SPEC as power_spec

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # usable as an MQTT topic level and a file name


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


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
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
    protocol: str = "auto"  # auto (MQTT 5, else 3.1.1) | 5 | 3.1.1
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


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    keys: tuple[ApiKey, ...] = ()
    max_upload_mb: float = 200.0
    octoprint_machine: str | None = None  # the machine behind /api/… (others: /octoprint/<id>/api/…)
    kiosk_loopback: bool = True  # the screen beside the machine (a browser on this host) acts for sessions
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


USAGE_MODES = ("mqtt", "pull", "none")


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


class _Table:
    """A TOML table read key by key, with the place of each key for error messages."""

    def __init__(self, data: Any, where: str, file: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: [{where}] must be a table")
        self.data, self.where, self.file = data, where, file
        self.seen: set[str] = set()

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], Any] | None = None,
        hint: str = "",
    ) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(
                    f"{self.file}: {self.where}.{key} is required{' (' + hint + ')' if hint else ''}"
                )
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.file}: {self.where}.{key}: expected {names}, got {value!r}")
        if check and not check(value):
            raise ConfigError(f"{self.file}: {self.where}.{key}: {hint or 'invalid value'}, got {value!r}")
        return value

    def done(self) -> None:
        extra = set(self.data) - self.seen
        if extra:
            raise ConfigError(f"{self.file}: {self.where}: unknown key(s) {', '.join(sorted(extra))}")


def read_toml(file: Path) -> dict[str, Any]:
    """A TOML file's tables, or a ConfigError naming the file and what is wrong with it."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}: line {line}: byte 0x{exc.object[exc.start]:02x} is not UTF-8 "
            "(save the file as UTF-8; Latin-1 accents are the usual cause)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> AgentConfig:
    file = Path(path)
    raw = read_toml(file)
    top = _Table(raw, "(top level)", file)
    agent = _Table(top.get("agent", dict), "agent", file)
    ident = "a letter or digit then letters, digits, - or _ (64 at most)"
    site = agent.get("site", str, check=ID.match, hint=ident)
    agent_id = agent.get("id", str, check=ID.match, hint=ident)
    data_dir = Path(agent.get("data_dir", str, "/var/lib/afn-agent"))
    if not data_dir.is_absolute():
        data_dir = (file.parent / data_dir).resolve()
    checkpoint_s = float(
        agent.get("checkpoint_s", (int, float), 2.0, lambda v: 0.1 <= v <= 5, "between 0.1 and 5 s")
    )
    spool = SpoolConfig(
        keep_h=float(agent.get("spool_keep_h", (int, float), 0.0, lambda v: 0 <= v <= 8760, "0 to 8760 h")),
        quota_mb=float(
            agent.get("spool_quota_mb", (int, float), 2000.0, lambda v: v > 0, "a positive number")
        ),
        min_free_mb=float(agent.get("min_free_mb", (int, float), 50.0, lambda v: v >= 0, ">= 0")),
    )
    stop_grace_s = float(
        agent.get("stop_grace_s", (int, float), 600.0, lambda v: 0 <= v <= 86400, "0 to 86400 s")
    )
    agent.done()
    tariffs = {"default": Tariff()}
    for name, table in top.get("tariffs", dict, {}).items():
        try:
            tariffs[name] = Tariff.from_snapshot({"name": name, **table}, where=f"tariffs.{name}")
        except TariffError as exc:
            raise ConfigError(f"{file}: {exc}") from None
        except TypeError:
            raise ConfigError(f"{file}: [tariffs.{name}] must be a table") from None
    machines = tuple(_machine(m, i, file, tariffs) for i, m in enumerate(top.get("machines", list, [])))
    ids = [m.id for m in machines]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"{file}: machines: the same id twice ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})"
        )
    broker = _broker(top.get("broker", dict), file) if "broker" in raw else None
    for m in machines:
        if broker is None and any(x and x.startswith("tasmota:") for x in (m.power, m.extraction)):
            raise ConfigError(
                f"{file}: machines ({m.id}).power: a Tasmota switch speaks MQTT: add a [broker]"
            )
    access = _access(top.get("access", dict), file) if "access" in raw else None
    api = _api(top.get("api", dict), file, machines) if "api" in raw else None
    safety = _safety(top.get("safety", dict), file) if "safety" in raw else SafetyConfig()
    materials = _materials(top.get("materials", dict, {}), file)
    booking = _Table(top.get("booking", dict, {}), "booking", file)
    mode = booking.get("mode", str, "mqtt" if broker else "none", lambda v: v in USAGE_MODES,
                       "mqtt, pull or none")  # fmt: skip
    booking.done()
    if mode == "mqtt" and broker is None:
        raise ConfigError(f"{file}: [booking].mode: mqtt needs a [broker] (or mode = \"pull\" or \"none\")")
    top.done()
    return AgentConfig(
        file, site, agent_id, data_dir, checkpoint_s, machines, tariffs, broker, access, api, safety, spool,
        materials, stop_grace_s, BookingConfig(mode),
    )  # fmt: skip


def _range(t: _Table, name: str, low: float, high: float) -> tuple[float, float] | None:
    value = t.get(name, list, None, lambda v: len(v) == 2 and all(isinstance(x, int | float) for x in v)
                  and low <= v[0] <= v[1] <= high, f"[low, high] in °C, {low:g} to {high:g}")  # fmt: skip
    return (float(value[0]), float(value[1])) if value else None


def _materials(data: dict[str, Any], file: Path) -> dict[str, Material]:
    """[materials.<NAME>]: density, price per kg, temperature ranges; replaces a built-in preset."""
    out = dict(BUILT_IN)
    for name, table in data.items():
        t = _Table(table, f"materials.{name}", file)
        price = t.get("price_per_kg", (int, float), None, lambda v: 0 <= v <= 100_000, "0 to 100000")
        out[key(name)] = Material(
            name=key(name),
            density_g_cm3=float(
                t.get("density_g_cm3", (int, float), check=lambda v: 0.5 <= v <= 3.0, hint="0.5 to 3.0 g/cm³")
            ),
            price_per_kg=Decimal(str(price)) if price is not None else None,
            nozzle_c=_range(t, "nozzle_c", 0, 500),
            bed_c=_range(t, "bed_c", 0, 200),
        )
        t.done()
    return out


def _safety(data: Any, file: Path) -> SafetyConfig:
    t = _Table(data, "safety", file)
    cfg = SafetyConfig(
        idle_heat_s=float(t.get("idle_heat_s", (int, float), 600.0, lambda v: v >= 1, "at least 1 s")),
        session_warn_s=float(t.get("session_warn_s", (int, float), 600.0, lambda v: v >= 0, ">= 0 s")),
    )
    t.done()
    return cfg


def _machine(data: Any, index: int, file: Path, tariffs: dict[str, Tariff]) -> MachineConfig:
    t = _Table(data, f"machines[{index}]", file)
    ident = "a letter or digit then letters, digits, - or _ (64 at most)"
    mid = t.get("id", str, check=ID.match, hint=ident)
    t.where = f"machines[{index}] ({mid})"
    profile = t.get("profile", str, hint="a firmware profile name, see `afn-agent profiles`")
    try:
        loaded = load_profile(profile)
    except ProfileError as exc:
        raise ConfigError(f"{file}: {t.where}.profile: {exc}") from None
    tariff = t.get("tariff", str, "default")
    if tariff not in tariffs:
        raise ConfigError(f"{file}: {t.where}.tariff: no [tariffs.{tariff}] (defined: {', '.join(tariffs)})")
    streamed, kind = loaded.streamed, loaded.kind
    cfg = MachineConfig(
        id=mid,
        machine_class=t.get(
            "class", str, check=ID.match, hint="a machine class such as fdm-printer or laser"
        ),
        profile=profile,
        port=t.get(
            "port", str, ... if streamed else "", hint="serial device, e.g. /dev/afn/printer-1"
        ),
        baud=t.get("baud", int, None, lambda v: 1200 <= v <= 4_000_000, "a baud rate"),
        tariff=tariff,
        material=t.get("material", str, "filament"),
        hold_uploads=t.get("hold_uploads", bool, True),
        reader=t.get("reader", str, None, valid_reader, READER_HINT),
        booking_required=t.get("booking_required", bool, False),
        confirm_clear=t.get("confirm_clear", bool, False),
        start_on_badge=t.get("start_on_badge", bool, True),
        claim_uploads=t.get("claim_uploads", bool, True),
        interlock=t.get("interlock", str, None, INTERLOCK.fullmatch, INTERLOCK_HINT),
        session_end=t.get(
            "session_end", str, "finish", lambda v: v in ("finish", "pause", "stop"), "finish, pause or stop"
        ),
        wait_for_port=t.get("wait_for_port", bool, False),
        console=_console(t.get("console", dict, {}), t.where, file),
        **_power(t, kind, streamed),
    )
    t.done()
    return cfg


def _console(data: dict[str, Any], where: str, file: Path) -> ConsoleSettings:
    table = _Table(data, f"{where}.console", file)
    settings = console_settings(table)
    table.done()
    return settings


def _power(t: _Table, kind: str, streamed: bool) -> dict[str, Any]:
    """A machine's power keys; a laser's switch fails closed and keeps extraction on 5 minutes by default."""
    spec_ok = lambda v: bool(power_spec.fullmatch(v))  # noqa: E731
    number = (int, float)
    laser = kind == "laser"
    after, side = (300.0, "closed") if laser else (0.0, "open")
    return {
        "power": t.get("power", str, None if streamed else ..., spec_ok, POWER_HINT),
        "power_safe": t.get("power_safe", str, side, SIDES.__contains__, "closed or open"),
        "power_after_s": float(t.get("power_after_s", number, after, lambda v: 0 <= v <= 86400, "0-86400")),
        "power_cool_c": float(t.get("power_cool_c", number, 50.0, lambda v: 20 <= v <= 150, "20 to 150")),
        "busy_w": float(t.get("busy_w", number, 20.0, lambda v: 0 < v <= 100_000, "above 0 W")),
        "power_poll_s": float(t.get("power_poll_s", number, 1.0, lambda v: 0.1 <= v <= 60, "0.1 to 60 s")),
        "extraction": t.get("extraction", str, None, spec_ok, POWER_HINT),
    }


SIDES = ("closed", "open")
POWER_HINT = (
    "sim, gpio:<chip>:<line>[:active_low], tasmota:<topic> or shelly:<host>[:port][#<switch id>]; a machine "
    "the agent does not stream to (protocol none) needs one"
)
READERS = ("evdev", "uart", "pcsc", "sim")
READER_HINT = "evdev:<device>, uart:<port>[@baud], pcsc[:<reader name>] or sim"
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
INTERLOCK = re.compile(r"sim|gpio:[A-Za-z0-9_/.-]+:\d{1,4}(:active_high|:active_low)?")
INTERLOCK_HINT = "gpio:<chip>:<line>[:active_high] (e.g. gpio:gpiochip0:17) or sim"


def valid_reader(spec: str) -> bool:
    """`uart:/dev/ttyUSB0@9600` with a standard baud rate, `evdev:<device>`, `pcsc[:name]`, `sim[:name]`."""
    kind, _, arg = spec.partition(":")
    if kind == "uart":
        port, at, baud = arg.partition("@")
        return bool(port) and (not at or (baud.isdigit() and int(baud) in BAUDS))
    if kind == "evdev":
        return bool(arg)
    return kind in ("pcsc", "sim")


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hours(value: str, where: str, file: Path) -> tuple[time, time]:
    try:
        opens, closes = (time.fromisoformat(x.strip()) for x in value.split("-"))
    except ValueError:
        raise ConfigError(f'{file}: {where}: expected "HH:MM-HH:MM", got {value!r}') from None
    if closes <= opens:
        raise ConfigError(f"{file}: {where}: closes before it opens ({value})")
    return opens, closes


def _access(data: Any, file: Path) -> AccessConfig:
    t = _Table(data, "access", file)
    hours_table = t.get("opening_hours", dict, {})
    bad = set(hours_table) - set(DAYS)
    if bad:
        raise ConfigError(
            f"{file}: access.opening_hours: unknown day(s) {', '.join(sorted(bad))} (use {', '.join(DAYS)})"
        )
    hours = {}
    for day, value in hours_table.items():
        if not isinstance(value, str):
            raise ConfigError(f'{file}: access.opening_hours.{day}: expected "HH:MM-HH:MM"')
        hours[day] = _hours(value, f"access.opening_hours.{day}", file)
    positive = lambda v: v > 0  # noqa: E731
    cfg = AccessConfig(
        badge_secret=t.get("badge_secret", str, check=lambda v: len(v) >= 16, hint="at least 16 characters"),
        cache_max_age_days=float(t.get("cache_max_age_days", (int, float), 7.0, positive, "above 0")),
        managers_always=t.get("managers_always", bool, True),
        supervisor_window_s=float(t.get("supervisor_window_s", (int, float), 120.0, positive, "above 0")),
        session_idle_s=float(t.get("session_idle_s", (int, float), 900.0, positive, "above 0")),
        opening_hours=hours,
        sync_url=t.get(
            "sync_url", str, None, lambda v: v.startswith(("http://", "https://")), "an http(s) URL"
        ),
        sync_token=t.get("sync_token", str, None),
        sync_every_s=float(t.get("sync_every_s", (int, float), 300.0, lambda v: v >= 5, "at least 5 s")),
        debounce_s=float(
            t.get("debounce_s", (int, float), 2.0, lambda v: 0 <= v <= 60, "between 0 and 60 s")
        ),
    )
    t.done()
    return cfg


def _broker(data: Any, file: Path) -> BrokerConfig:
    t = _Table(data, "broker", file)
    cfg = BrokerConfig(
        host=t.get("host", str, "127.0.0.1"),
        port=t.get("port", int, 1883, lambda v: 0 < v < 65536, "a TCP port"),
        username=t.get("username", str, None),
        password=t.get("password", str, None),
        tls=t.get("tls", bool, False),
        ca_file=t.get("ca_file", str, None),
        cert_file=t.get("cert_file", str, None),
        key_file=t.get("key_file", str, None),
        keepalive_s=t.get("keepalive_s", int, 30, lambda v: 5 <= v <= 3600, "between 5 and 3600 s"),
        telemetry_hz=float(
            t.get("telemetry_hz", (int, float), 1.0, lambda v: 0 < v <= 50, "above 0, at most 50")
        ),
        topic_prefix=t.get(
            "topic_prefix", str, "afn/v1", lambda v: "#" not in v and "+" not in v, "no wildcards"
        ),
        command_secret=t.get("command_secret", str, None, lambda v: len(v) >= 16, "at least 16 characters"),
        home_assistant=t.get("home_assistant", bool, False),
        protocol=t.get("protocol", str, "auto", lambda v: v in ("auto", "5", "3.1.1"), "auto, 5 or 3.1.1"),
        required=t.get("required", bool, False),
    )
    t.done()
    return cfg


API_ROLES = ("slicer", "manager", "booking")


def _api(data: Any, file: Path, machines: tuple[MachineConfig, ...]) -> ApiConfig:
    t = _Table(data, "api", file)
    ids = {m.id for m in machines}
    keys = []
    for i, k in enumerate(t.get("keys", list, [])):
        kt = _Table(k, f"api.keys[{i}]", file)
        machines_of = tuple(kt.get("machines", list, []))
        if not all(isinstance(m, str) for m in machines_of):
            raise ConfigError(
                f"{file}: api.keys[{i}].machines: expected a list of machine ids, got {list(machines_of)!r}"
            )
        unknown = set(machines_of) - ids
        if unknown:
            raise ConfigError(
                f"{file}: api.keys[{i}].machines: unknown machine(s) {', '.join(sorted(unknown))}"
            )
        hexhash = lambda v: len(v) == 64 and all(c in "0123456789abcdef" for c in v)  # noqa: E731
        hint = "64 lower-case hex digits: `afn-agent api-key` makes a key and its hash"
        keys.append(
            ApiKey(
                name=kt.get("name", str),
                role=kt.get("role", str, check=lambda v: v in API_ROLES, hint=" or ".join(API_ROLES)),
                sha256=kt.get("sha256", str, check=hexhash, hint=hint),
                member=kt.get("member", str, None),
                machines=machines_of,
                quota_mb=kt.get("quota_mb", (int, float), None, lambda v: v > 0, "a positive number"),
            )
        )
        kt.done()
    default = t.get(
        "octoprint_machine", str, machines[0].id if machines else None, lambda v: v in ids, "a machine id"
    )
    cfg = ApiConfig(
        host=t.get("host", str, "127.0.0.1"),
        port=t.get("port", int, 8080, lambda v: 0 <= v < 65536, "a TCP port"),
        keys=tuple(keys),
        max_upload_mb=float(
            t.get("max_upload_mb", (int, float), 200.0, lambda v: 0 < v <= 4096, "1 to 4096")
        ),
        octoprint_machine=default,
        kiosk_loopback=t.get("kiosk_loopback", bool, True),
        metrics_public=t.get("metrics_public", bool, True),
        max_connections=t.get("max_connections", int, 256, lambda v: 8 <= v <= 100_000, "8 to 100000"),
        max_connections_per_client=t.get(
            "max_connections_per_client", int, 32, lambda v: 1 <= v <= 100_000, "1 to 100000"
        ),
        header_timeout_s=float(
            t.get("header_timeout_s", (int, float), 10.0, lambda v: 0 < v <= 600, "0 to 600")
        ),
        key_quota_mb=float(t.get("key_quota_mb", (int, float), 500.0, lambda v: v > 0, "a positive number")),
        body_timeout_s=float(
            t.get("body_timeout_s", (int, float), 30.0, lambda v: 0 < v <= 3600, "0 to 3600")
        ),
    )
    t.done()
    return cfg
