"""The configuration files' shape, as pydantic models: what each key holds, its default and its limits, and
one sentence saying what it does. Validation, the shipped JSON Schema (deploy/agent.schema.json) and the
example configuration (deploy/agent.example.toml) all come from here, so none of them can drift.

These models read the file; config.py turns a validated file into the agent's runtime configuration."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .camera import CameraSettings
from .console_config import ConsoleSettings
from .power.spec import SPEC as POWER_SPEC

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # usable as an MQTT topic level and a file name
IDENT_HINT = "a letter or digit then letters, digits, - or _ (64 at most)"


def check(test: Callable[[Any], Any], hint: str) -> AfterValidator:
    """A value check whose failure reads as what is expected (`hint`), not as a regular expression."""

    def run(value: Any) -> Any:
        if not test(value):
            raise ValueError(hint)
        return value

    return AfterValidator(run)


Ident = Annotated[str, check(ID.match, IDENT_HINT), Field(json_schema_extra={"pattern": ID.pattern})]
Secret = Annotated[str, check(lambda v: len(v) >= 16, "at least 16 characters")]
Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(ge=0)]
READER_HINT = "evdev:<device>, uart:<port>[@baud], pcsc[:<reader name>] or sim"
POWER_HINT = "sim, gpio:<chip>:<line>[:active_low], tasmota:<topic> or shelly:<host>[:port][#<switch id>]"
INTERLOCK = re.compile(r"sim|gpio:[A-Za-z0-9_/.-]+:\d{1,4}(:active_high|:active_low)?")
INTERLOCK_HINT = "gpio:<chip>:<line>[:active_high] (e.g. gpio:gpiochip0:17) or sim"
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def valid_reader(spec: str) -> bool:
    """`uart:/dev/ttyUSB0@9600` with a standard baud rate, `evdev:<device>`, `pcsc[:name]`, `sim`."""
    kind, _, arg = spec.partition(":")
    if kind == "uart":
        port, at, baud = arg.partition("@")
        return bool(port) and (not at or (baud.isdigit() and int(baud) in BAUDS))
    if kind == "evdev":
        return bool(arg)
    return kind in ("pcsc", "sim")


def _hours_ok(value: str) -> bool:
    return bool(HOURS.match(value)) and value[:5] < value[6:]


Reader = Annotated[str, check(valid_reader, READER_HINT)]
PowerSpec = Annotated[str, check(lambda v: POWER_SPEC.fullmatch(v), POWER_HINT)]
OpeningHours = Annotated[str, check(_hours_ok, '"HH:MM-HH:MM", opening before closing')]


class Table(BaseModel):
    """A TOML table: no unknown key (a typo is an error, with the closest known key), no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class AgentTable(Table):
    site: Ident = Field(
        description="the lab: an MQTT topic level and a usage-record field", examples=["fablab"]
    )
    id: Ident = Field(
        description="this agent; also its MQTT user name in deploy/mosquitto/afn.acl",
        examples=["pi-printers"],
    )
    data_dir: str = Field(
        "/var/lib/afn-agent", description="the ledger and the job files (relative: to this file)"
    )
    checkpoint_s: float = Field(
        2.0,
        ge=0.1,
        le=5,
        description="a running job's figures are saved this often (a crash loses at most this)",
    )
    spool_keep_h: float = Field(
        0.0, ge=0, le=8760, description="a job's file leaves the spool this long after it ends"
    )
    spool_quota_mb: float = Field(2000.0, gt=0, description="all job files together")
    min_free_mb: float = Field(
        50.0, ge=0, description="uploads stop below this much free disk, so the ledger can be written"
    )
    stop_grace_s: float = Field(
        600.0,
        ge=0,
        le=86400,
        description="a stop waits this long for running jobs (systemd TimeoutStopSec above it)",
    )


Amount = Annotated[float, Field(ge=0)]
StopType = Literal["cancelled", "fault", "offline", "permission", "admin"]  # ledger/tariff.py STOP_TYPES


class TariffTable(Table):
    """[tariffs.<name>]: the fields of ledger/tariff.py's Tariff (a unit test holds them equal)."""

    currency: str = Field("EUR", description="ISO 4217 code of every amount")
    per_active_minute: Amount = Field(0.0, description="per minute the machine works")
    per_heating_minute: Amount = Field(0.0, description="per minute of heating before the job moves")
    per_paused_minute: Amount = Field(0.0, description="per minute paused")
    per_waiting_minute: Amount = Field(0.0, description="per minute waiting for a person (M0, tool change)")
    per_gram: Amount = Field(0.0, description="per gram of material (a preset's price_per_kg replaces it)")
    per_metre: Amount = Field(0.0, description="per metre of filament")
    per_beam_minute: Amount = Field(0.0, description="per minute of laser beam on")
    per_spindle_minute: Amount = Field(0.0, description="per minute of spindle on")
    minimum: Amount = Field(0.0, description="the least a job costs")
    rounding: float = Field(0.01, gt=0, description="prices are rounded to this step")
    rounding_mode: Literal["nearest", "up"] = Field("nearest", description="nearest or up")
    policy: dict[StopType, Literal["full", "done_part", "none"]] = Field(
        default_factory=dict,
        description="a job that did not complete is billed, by stop type: full, done_part, none",
    )


def _ordered(high: float) -> AfterValidator:
    return check(lambda v: 0 <= v[0] <= v[1] <= high, f"[low, high] in °C, 0 to {high:g}, low first")


Pair = Field(min_length=2, max_length=2)
NozzleRange = Annotated[list[float], Pair, _ordered(500)]  # read as a (low, high) pair by config.py
BedRange = Annotated[list[float], Pair, _ordered(200)]


class MaterialTable(Table):
    density_g_cm3: float = Field(
        ge=0.5, le=3.0, description="grams are weighed at this density", examples=[1.24]
    )
    price_per_kg: float | None = Field(
        None, ge=0, le=100_000, description="replaces the tariff's per_gram for this material"
    )
    nozzle_c: NozzleRange | None = Field(None, description="[low, high] °C a preheat and a job may use")
    bed_c: BedRange | None = Field(None, description="[low, high] °C of the bed")


class MachineTable(Table):
    id: Ident = Field(description="the machine: MQTT topic level, kiosk URL, CLI --machine")
    machine_class: Ident = Field(
        alias="class", description="trainings are per class, e.g. fdm-printer, laser"
    )
    profile: str = Field(description="its firmware profile: `afn-agent profiles` lists them")
    port: str | None = Field(
        None, description="its serial device, a stable name from deploy/udev (not for a power-only machine)"
    )
    baud: Annotated[int, check(lambda v: 1200 <= v <= 4_000_000, "a baud rate, 1200 to 4000000")] | None = (
        Field(None, description="the link's speed (default: the profile's)")
    )
    tariff: str = Field("default", description="a [tariffs.<name>] table")
    material: str = Field("filament", description="loaded at start: a [materials] preset or a plain label")
    hold_uploads: bool = Field(True, description="jobs from slicers wait for their owner's badge")
    reader: Reader | None = Field(None, description="its badge reader: " + READER_HINT)
    booking_required: bool = Field(False, description="a session needs a booking from the booking system")
    confirm_clear: bool = Field(
        False, description="after a job, someone confirms the bed is clear before the next"
    )
    start_on_badge: bool = Field(
        True, description="held jobs start at badge-in; false: the member presses Start"
    )
    claim_uploads: bool = Field(
        True, description="a member at the machine may claim an upload sent with a shared key"
    )
    power: PowerSpec | None = Field(None, description="its power switch (docs/power.md): " + POWER_HINT)
    power_safe: Literal["closed", "open"] | None = Field(
        None,
        description="switch unreachable: closed (no session, no job) or open (run without it); default "
        "closed for a laser, open otherwise",
    )
    power_after_s: float | None = Field(
        None,
        ge=0,
        le=86400,
        description="power (and extraction) stays on this long after use; default 300 for a laser, else 0",
    )
    power_cool_c: float = Field(
        50.0, ge=20, le=150, description="a printer stays powered until its hotend is below this"
    )
    busy_w: float = Field(
        20.0, gt=0, le=100_000, description="a power-only machine is busy (billed) above this"
    )
    power_poll_s: float = Field(1.0, ge=0.1, le=60, description="how often the plug is read")
    extraction: PowerSpec | None = Field(None, description="a laser's extraction or chiller switch")
    interlock: Annotated[str, check(INTERLOCK.fullmatch, INTERLOCK_HINT)] | None = Field(
        None, description="a lid, door or extraction switch: " + INTERLOCK_HINT
    )
    session_end: Literal["finish", "pause", "stop"] = Field(
        "finish", description="when the session must end mid-job: finish, pause or stop the job"
    )
    wait_for_port: bool = Field(
        False, description="its port may be absent at start (a board powered with the machine)"
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings, description="the screen beside it (docs/console.md)"
    )
    camera: CameraSettings | None = Field(
        None, description="its camera: pictures at a job's start, end, fault and on demand (ffmpeg)"
    )


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class AccessTable(Table):
    badge_secret: Secret = Field(description="the site's key for badge hashes (the same on every agent)")
    cache_max_age_days: float = Field(
        7.0, gt=0, description="without a sync for this long, only managers pass"
    )
    managers_always: bool = Field(True, description="managers pass without training or booking")
    supervisor_window_s: float = Field(
        120.0, gt=0, description="a trainer must badge within this after a supervised member"
    )
    session_idle_s: float = Field(
        900.0, gt=0, description="a session with no job and no activity ends after this"
    )
    opening_hours: dict[Day, OpeningHours] = Field(
        default_factory=dict, description='per day, "HH:MM-HH:MM"; a day not listed is closed'
    )
    sync_url: (
        Annotated[str, check(lambda v: v.startswith(("http://", "https://")), "an http(s) URL")] | None
    ) = Field(None, description="the booking system's directory, pulled over HTTP")
    sync_token: str | None = Field(None, description="its bearer token")
    sync_every_s: float = Field(300.0, ge=5, description="how often it is pulled")
    debounce_s: float = Field(
        2.0, ge=0, le=60, description="the same card read again within this is one read"
    )


class BrokerTable(Table):
    host: str = Field("127.0.0.1", description="the MQTT broker")
    port: Annotated[int, Field(gt=0, le=65535)] = Field(1883, description="1883, or 8883 with TLS")
    nodes: list[NodeAddress] = Field(
        default_factory=list,
        description="the other nodes of a clustered broker (host or host:port), tried in order when the one "
        "in use fails; a node that answers is kept while it stays up",
    )
    username: str | None = Field(None, description="this agent's broker user (its id in afn.acl)")
    password: str | None = Field(None, description="its password (deploy/mosquitto/setup-broker.sh makes it)")
    tls: bool = Field(False, description="connect with TLS")
    ca_file: str | None = Field(None, description="the lab CA that signed the broker's certificate")
    cert_file: str | None = Field(None, description="a client certificate, where the broker asks for one")
    key_file: str | None = Field(None, description="its private key")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive")
    telemetry_hz: float = Field(1.0, gt=0, le=50, description="temperatures and progress per second")
    topic_prefix: Annotated[str, check(lambda v: "#" not in v and "+" not in v, "no wildcards")] = Field(
        "afn/v1", description="above <site>/<machine>/…"
    )
    command_secret: Secret | None = Field(
        None,
        description="verifies the dashboard's signed commands (the same on every agent and the dashboard)",
    )
    home_assistant: bool = Field(False, description="publish Home Assistant MQTT discovery")
    home_assistant_buttons: bool = Field(
        False,
        description="pause/resume/cancel buttons in Home Assistant: only if the broker's ACL lets Home "
        "Assistant's user alone write <prefix>/<site>/<machine>/ha/button (docs/mqtt.md)",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field("auto", description="auto: MQTT 5, else 3.1.1")
    session: Literal["persistent", "clean"] = Field(
        "persistent",
        description="clean: the broker keeps no session and subscriptions are QoS 0; the outbox still "
        "resends each record until it is acknowledged (NATS's MQTT gateway in a cluster: docs/mqtt.md)",
    )
    status_every_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="also re-send each machine's retained status and the agent's `online` this often; 0: "
        "only on changes and (re)connections (a clustered broker whose retained copies may go stale: 30)",
    )
    required: bool = Field(
        False, description="unreachable at start: refuse to run (exit 8) instead of running on the outbox"
    )


class ApiKeyTable(Table):
    name: str = Field(description="who holds it (audit, logs)")
    role: Literal["slicer", "manager", "booking", "viewer"] = Field(
        description="slicer, manager, booking or viewer (reads its machines only: Home Assistant)"
    )
    sha256: Annotated[
        str, check(HEX64.match, "64 lower-case hex digits: `afn-agent api-key` makes a key and its hash")
    ] = Field(description="of the key; the key itself is never stored")
    member: str | None = Field(None, description="a slicer key of one member: uploads are that member's")
    machines: list[str] = Field(default_factory=list, description="the machines it may use (empty: all)")
    quota_mb: float | None = Field(None, gt=0, description="its job files in the spool at once")


class ApiTable(Table):
    host: str = Field("127.0.0.1", description="listen address; 0.0.0.0 for slicers on the lab's network")
    port: Port = Field(8080, description="the HTTP API, the kiosk and the OctoPrint-compatible routes")
    max_upload_mb: float = Field(200.0, gt=0, le=4096, description="a job file's largest size")
    octoprint_machine: str | None = Field(None, description="the machine behind /api/… (default: the first)")
    kiosk_loopback: bool = Field(True, description="a browser on this host is the kiosk of every machine")
    announce: bool = Field(True, description="announce each machine to slicers (mDNS _octoprint._tcp)")
    announce_on: list[str] = Field(
        default_factory=list, description="IPv4 addresses to announce on (empty: every interface)"
    )
    metrics_public: bool = Field(True, description="/metrics without a key")
    max_connections: int = Field(256, ge=8, le=100_000, description="connections held at once, in all")
    max_connections_per_client: int = Field(32, ge=1, le=100_000, description="per client address")
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a request's headers must be complete by then"
    )
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="a request body may pause this long")
    key_quota_mb: float = Field(
        500.0, gt=0, description="each key's (and each session's) job files in the spool"
    )
    keys: list[ApiKeyTable] = Field(
        default_factory=list, description="`afn-agent api-key` prints a key and the lines to paste here"
    )


class SafetyTable(Table):
    idle_heat_s: float = Field(
        600.0, ge=1, description="heaters on with no job and no activity: off after this"
    )
    session_warn_s: float = Field(600.0, ge=0, description="warn this long before a session must end mid-job")


class BookingTable(Table):
    mode: Literal["mqtt", "pull", "none"] | None = Field(
        None,
        description="who takes the usage records: mqtt (acknowledged on the broker), pull (GET /v1/usage, "
        "POST /v1/usage/ack) or none (kept, exported, `afn-agent report`); default mqtt with a [broker], "
        "none without",
    )


class DirectoryTable(Table):
    source: Literal["fab-manager"] = Field(description="where members come from: fab-manager (Open API v1)")
    url: Annotated[str, check(lambda v: v.startswith(("http://", "https://")), "an http(s) URL")] = Field(
        description="Fab-manager's address, e.g. https://fablab.example.org (/open_api/v1 is added)"
    )
    token: Annotated[str, Field(min_length=8)] = Field(
        description="an Open API client's token (Fab-manager: Admin > Open API clients)"
    )
    badge_field: str = Field("external_id", description="the user field that holds the member's badge UID")
    every_s: float = Field(300.0, ge=30, description="a quick pull (what is new since the last) this often")
    full_every_s: float = Field(3600.0, ge=60, description="a full pull (cancellations, removals) this often")
    reservations_days: float = Field(120.0, gt=0, description="reservations made within this many days count")
    per_page: int = Field(100, ge=1, le=1000, description="items asked for per page")
    retries: int = Field(3, ge=0, le=10, description="a failed request is tried again this many times")
    backoff_s: float = Field(1.0, gt=0, le=60, description="first wait before a retry (then doubling)")
    timeout_s: float = Field(20.0, gt=0, le=300, description="one request's time limit")
    machines: dict[str, Ident | list[Ident]] = Field(
        default_factory=dict, description='Fab-manager machine (id or slug) → this lab\'s machine id(s)'
    )
    trainings: dict[str, Ident] = Field(
        default_factory=dict, description="Fab-manager training (id or slug) → the machine class it opens"
    )
    managers: list[int | str] = Field(
        default_factory=list, description='Fab-manager user ids or "group:<slug>" who are managers here'
    )
    trainers: list[int | str] = Field(
        default_factory=list, description='user ids or "group:<slug>" who may supervise'
    )


MEMBER_SCHEMES = ("mailto", "mailtos", "tgram", "matrix", "matrixs", "ntfy", "ntfys", "discord", "signal",
                  "signals")  # fmt: skip
Scheme = Annotated[str, check(lambda v: v.isalnum() and v == v.lower(), "a lower-case scheme, e.g. mailto")]
NODE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:([1-9][0-9]{0,4}))?$")


def _node(v: str) -> bool:
    found = NODE.match(v)
    return found is not None and int(found.group(3) or 1) <= 65535


NodeAddress = Annotated[str, check(_node, "host or host:port, e.g. broker2.lab.lan:1883")]
NotifyURL = Annotated[str, check(lambda v: "://" in v, "an Apprise URL such as mailto://… or ntfy://…")]


class NotifyTable(Table):
    managers: list[NotifyURL] = Field(
        default_factory=list, description="Apprise URLs for the managers: alarms, undelivered usage records"
    )
    manager_language: Literal["fr", "en"] = Field("fr", description="the managers' notifications' language")
    members: bool = Field(True, description="members hear at their own targets (opted in in the directory)")
    member_schemes: list[Scheme] = Field(
        default_factory=lambda: list(MEMBER_SCHEMES),
        description="the kinds of target a member's own URL may be (the directory is not trusted to point "
        "the agent at any host): e-mail, Telegram, Matrix, ntfy, Discord, Signal by default",
    )
    language: Literal["fr", "en"] = Field("fr", description="a member's language when the directory has none")
    per_target_per_hour: int = Field(20, ge=1, le=1000, description="more in an hour are dropped")
    retries: int = Field(3, ge=0, le=10, description="a failed notification is tried again this many times")
    retry_s: float = Field(30.0, gt=0, le=3600, description="first wait before a retry (then doubling)")
    backlog_records: int = Field(
        20, ge=1, description="managers hear when this many usage records await the booking system"
    )
    backlog_check_s: float = Field(60.0, gt=0, description="how often the backlog is looked at")


class AgentFile(Table):
    """/etc/afn-agent/agent.toml: one agent (one Raspberry Pi) and its machines."""

    model_config = ConfigDict(
        title="afn-agent configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )
    agent: AgentTable
    tariffs: dict[str, TariffTable] = Field(
        default_factory=dict,
        description="what machines cost: [tariffs.<name>]",
    )
    materials: dict[str, MaterialTable] = Field(
        default_factory=dict,
        description=("material presets; built in without a price: PLA, PETG, ABS, ASA, TPU, PC, PA"),
    )
    machines: list[MachineTable] = Field(default_factory=list, description="one [[machines]] per machine")
    access: AccessTable | None = Field(None, description="badges, trainings and sessions (docs/members.md)")
    directory: DirectoryTable | None = Field(
        None, description="members pulled from a booking system (docs/fab-manager.md)"
    )
    safety: SafetyTable = Field(default_factory=SafetyTable, description="heaters and session ends")
    broker: BrokerTable | None = Field(None, description="MQTT: status, telemetry, events and usage")
    booking: BookingTable = Field(default_factory=BookingTable, description="the usage records' taker")
    api: ApiTable | None = Field(None, description="the HTTP API, the kiosk, slicers")
    notify: NotifyTable | None = Field(None, description="notifications through Apprise (docs/notify.md)")


class ManagerTable(Table):
    name: str = Field(description="the manager's sign-in name")
    sha256: Annotated[str, check(HEX64.match, "64 lower-case hex digits")] = Field(description="of their key")
    labs: list[Ident] = Field(default_factory=list, description="the labs they steer (none: every lab)")


class FleetTable(Table):
    site: Ident = Field(description="the agents' site")
    host: str = Field("127.0.0.1", description="listen address")
    port: Port = Field(8090, description="the dashboard's HTTP port")
    command_secret: Secret | None = Field(None, description="the agents' [broker] command_secret")
    managers: list[ManagerTable] = Field(default_factory=list, description="who may sign in and steer")
    data_dir: str = Field(
        "/var/lib/afn-fleet", description="the job history, history.sqlite3 (relative: to this file)"
    )
    labs: list[Ident] = Field(
        default_factory=list, description="more sites on this dashboard, each a lab (their agents' site)"
    )


class FleetFile(Table):
    """/etc/afn-agent/fleet.toml: the fleet dashboard."""

    model_config = ConfigDict(title="afn-agent fleet dashboard configuration")
    fleet: FleetTable
    broker: BrokerTable = Field(default_factory=BrokerTable, description="the broker, as user fleet")


class ConsumerTable(Table):
    site: Ident = Field(description="the agents' site")
    labs: list[Ident] = Field(
        default_factory=list,
        description="more sites (labs) this instance takes records from; on a broker without shared "
        "subscriptions (MQTT 3.1.1: NATS), split the labs between instances instead of sharing them",
    )
    store: str = Field(description="the SQLite file the records are kept in (shared by the instances)")
    group: Ident = Field("booking", description="the shared subscription's group: one record per group")


class ConsumerFile(Table):
    """A usage consumer instance (`afn-agent consume`): the booking side's reference, shared load."""

    model_config = ConfigDict(title="afn-agent usage consumer configuration")
    consumer: ConsumerTable
    broker: BrokerTable = Field(default_factory=BrokerTable, description="the broker, as user booking")
