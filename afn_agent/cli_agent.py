"""`afn-agent` sub-commands that work on a configured agent: run, jobs, ledger, check-config."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import AgentConfig, ConfigError, load_config
from .startup import Exit, Failure, api_port, broker, refused_sentence

if TYPE_CHECKING:  # imported where used: the access room pulls in OpenSSL (hashlib), 4 MB of RSS
    from .access.decide import AccessPolicy
    from .access.directory import Directory
    from .agent import Agent
    from .ledger import Ledger


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="run the agent: machines, ledger, bus (foreground; systemd runs this)")
    r.add_argument("--config", required=True, help="agent TOML file, e.g. /etc/afn-agent/agent.toml")
    r.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="what the journal receives (default INFO)")  # fmt: skip
    r.add_argument("--wait-for-ports", action="store_true",
                   help="start even if a machine's port is missing, and connect when it appears")  # fmt: skip
    r.set_defaults(handler=cmd_run)

    k = sub.add_parser(
        "api-key",
        help="make a new API key: with --config, added to that agent's ledger (a running agent takes it at "
        "once); without, the config lines holding its hash are printed",
    )
    k.add_argument("--name", help="who or what uses it (required to make one)")
    k.add_argument("--role", choices=("slicer", "manager", "booking"), help="required to make one")
    k.add_argument("--member", help="slicer key of one member: their uploads are theirs")
    k.add_argument("--machine", action="append", default=[], help="a machine it may use (repeat)")
    k.add_argument("--config", help="the agent's TOML file: add the key to its ledger, no restart")
    k.add_argument("--revoke", metavar="KEY_ID", help="with --config: revoke a key added that way")
    k.set_defaults(handler=cmd_api_key)

    pa = sub.add_parser("pair", help="a one-time code (ten minutes) that pairs a screen to one console")
    pa.add_argument("--config", required=True, help="the agent's TOML file")
    pa.add_argument("--machine", required=True, help="the machine whose console the screen will show")
    pa.set_defaults(handler=cmd_pair)

    po = sub.add_parser(
        "ports", help="serial devices attached, their USB IDs, and udev lines for stable names"
    )
    po.add_argument("--json", action="store_true", help="one JSON array, an object per serial device")
    po.set_defaults(handler=cmd_ports)

    fl = sub.add_parser("fleet", help="the fleet dashboard: every machine of a site, live from the broker")
    fl.add_argument("--config", required=True, help="fleet TOML file ([fleet] and [broker])")
    fl.set_defaults(handler=cmd_fleet)

    c = sub.add_parser("check-config", help="validate an agent's or the fleet dashboard's configuration "
                       "file: every mistake at once, with its line, key and what is expected")  # fmt: skip
    c.add_argument("file", help="agent.toml or fleet.toml (told apart by its [agent] or [fleet] table)")
    c.add_argument("--no-ports", action="store_true", help="do not require the machines' serial ports to "
                   "exist now, nor the API's TCP port to be free (a running agent holds it)")  # fmt: skip
    c.set_defaults(handler=cmd_check_config)

    cf = sub.add_parser("config-files", help="write the configuration's JSON Schemas and the example "
                        "agent.toml, generated from the models (for deploy/ or an editor)")  # fmt: skip
    cf.add_argument("--out", default=".", help="directory to write them to (default: the current one)")
    cf.set_defaults(handler=cmd_config_files)

    j = sub.add_parser("jobs", help="queue, list or cancel jobs in the agent's ledger")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    add = jsub.add_parser("add", help="spool, quote and queue a G-code file for a machine")
    add.add_argument("file", help="the G-code file")
    add.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    add.add_argument("--machine", required=True, help="the machine's id")
    add.add_argument("--member", help="member id (from the directory; never a badge UID)")
    add.add_argument("--supervisor", help="the trainer's member id, for a supervised job")
    add.add_argument("--account", help="the account billed, when not the member's own (a project, a class)")
    add.add_argument("--booking", help="the booking system's reservation id")
    add.add_argument("--held", action="store_true", help="hold until the member badges in")
    add.set_defaults(handler=cmd_jobs_add)
    ls = jsub.add_parser("list", help="jobs and their states")
    ls.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    ls.add_argument("--machine", help="only this machine's jobs")
    ls.add_argument("--json", action="store_true", help="one JSON array, an object per job (for scripts)")
    ls.set_defaults(handler=cmd_jobs_list)

    mem = sub.add_parser("members", help="the member directory cached by the agent")
    msub = mem.add_subparsers(dest="members_command", required=True)
    imp = msub.add_parser("import", help="load the member directory: a JSON snapshot, or a member list as "
                          "CSV or XLSX (docs/members.md)")  # fmt: skip
    imp.add_argument("file", help="the member list (.csv, .xlsx) or a directory snapshot (.json)")
    imp.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    imp.add_argument(
        "--version", type=int, help="snapshot version for a CSV file (default: one above the cache)"
    )
    imp.set_defaults(handler=cmd_members_import)
    chk = msub.add_parser("check", help="what the agent would decide for a badge at a machine, and why")
    chk.add_argument("badge", help="badge UID as the reader gives it")
    chk.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    chk.add_argument("--machine", required=True, help="the machine's id")
    chk.add_argument("--job-minutes", type=float, help="check a job of this length against the bookings")
    chk.add_argument("--json", action="store_true", help="the decision as one JSON object (for scripts)")
    chk.set_defaults(handler=cmd_members_check)

    led = sub.add_parser("ledger", help="usage records")
    lsub = led.add_subparsers(dest="ledger_command", required=True)
    ex = lsub.add_parser("export", help="usage records that ended in a period, as CSV or JSON")
    ex.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    ex.add_argument("--since", required=True, help="first day (UTC), e.g. 2026-11-01")
    ex.add_argument("--until", help="day after the last (UTC); default: no end")
    ex.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    ex.set_defaults(handler=cmd_ledger_export)
    bk = lsub.add_parser("backup", help="copy the ledger while the agent runs (SQLite's online backup, "
                         "checked): what a nightly timer runs")  # fmt: skip
    bk.add_argument("--config", required=True, help="the agent's TOML file, e.g. /etc/afn-agent/agent.toml")
    bk.add_argument("--to", required=True, help="a file, or a directory for ledger-<date>.sqlite3")
    bk.set_defaults(handler=cmd_ledger_backup)


def until_signal(turn: threading.Event | None = None) -> threading.Event:
    """An event set by SIGTERM (systemd stop) or SIGINT (Ctrl-C): long-running commands wait on it;
    `turn`, if given, is raised too (a loop that also waits for other signals waits on it)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raiser(stop, turn or stop))
    return stop


def _raiser(flag: threading.Event, turn: threading.Event) -> Callable[..., None]:
    """A signal handler raising `flag`, then `turn`: the main thread waits on `turn` for any of them."""

    def handler(*_: object) -> None:
        flag.set()
        turn.set()

    return handler


def config_or_exit(path: str) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        for line in lines:
            print(f"afn-agent: {line}", file=sys.stderr)
        if len(lines) > 1:
            print(f"afn-agent: {len(lines)} mistakes in {path}", file=sys.stderr)
        raise SystemExit(int(Exit.INVALID)) from None


def cmd_api_key(args: argparse.Namespace) -> int:
    from .api.auth import new_key

    if not args.revoke and not (args.name and args.role):
        print("afn-agent api-key: --name and --role are required to make a key", file=sys.stderr)
        return 2
    if args.revoke and not args.config:
        print("afn-agent api-key: --revoke needs --config (a key in the config file: delete its lines "
              "and reload)", file=sys.stderr)  # fmt: skip
        return 2
    if args.config:
        return _ledger_key(args)
    key, digest = new_key()
    print(f"key (give it to the client; it is not stored anywhere): {key}\n")
    print("[[api.keys]]")
    print(f'name = "{args.name}"\nrole = "{args.role}"')
    if args.member:
        print(f'member = "{args.member}"')
    print(f'sha256 = "{digest}"')
    return 0


def _ledger_key(args: argparse.Namespace) -> int:
    """A key in the agent's ledger, beside the running agent (SQLite serialises the two writers)."""
    import getpass

    from .agent import open_ledger
    from .ledger.keys import KeyBook

    config = load_config(args.config)
    unknown = set(args.machine) - {m.id for m in config.machines}
    if unknown:
        raise ConfigError(f"{args.config}: no machine(s) {', '.join(sorted(unknown))}")
    ledger = open_ledger(config)
    try:
        book, actor = KeyBook(ledger), f"cli:{getpass.getuser()}"
        if args.revoke:
            if not book.revoke(args.revoke, actor):
                print(f"afn-agent: no live key {args.revoke!r} in {config.ledger_path}", file=sys.stderr)
                return 1
            ledger.audit(actor, "key-revoke", "revoked", None, None, key_id=args.revoke)
            print(f"revoked {args.revoke}")
            return 0
        key, row = book.add(args.name, args.role, actor, args.member, tuple(args.machine))
        ledger.audit(actor, "key-create", "created", None, None, key_id=row["id"], role=args.role)
    finally:
        ledger.close()
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print(f"id {row['id']} (to revoke it: afn-agent api-key --config {args.config} --revoke {row['id']})")
    print("the running agent accepts it now; no restart, no reload")
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    """Written to the ledger beside the running agent, which takes the code at once (no restart)."""
    import getpass

    from .agent import open_ledger
    from .ledger.keys import PAIRING_S, KeyBook, Pairing

    config = load_config(args.config)
    if config.find(args.machine) is None:
        raise ConfigError(f"{args.config}: no machine {args.machine!r}")
    ledger = open_ledger(config)
    try:
        actor = f"cli:{getpass.getuser()}"
        code = Pairing(KeyBook(ledger)).code(args.machine, actor)
        ledger.audit(actor, "pairing-code", "made", args.machine, None)
    finally:
        ledger.close()
    print(f"pairing code for {args.machine}: {code}")
    print(f"open http://<agent>:<port>/kiosk/{args.machine} on the screen and type it within "
          f"{PAIRING_S / 60:g} minutes; it works once")  # fmt: skip
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    """What is plugged in, so a fab manager can name each machine's port after its USB serial number."""
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if args.json:
        print(json.dumps([{"device": p.device, "vid": p.vid, "pid": p.pid, "serial": p.serial_number,
                           "manufacturer": p.manufacturer, "product": p.product, "location": p.location}
                          for p in ports], indent=1))  # fmt: skip
        return 0
    if not ports:
        print("no serial devices found")
        return 0
    for p in ports:
        ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None else "-"
        what = f"{p.manufacturer or ''} {p.product or ''}".strip()
        print(f"{p.device:16} {ids:10} serial={p.serial_number or '-':24} {what}".rstrip())
    print("\n# udev rules (deploy/udev/99-afn-agent.rules), one per machine; rename afn/<name>:")
    for n, p in enumerate(ports, 1):
        if p.vid is None:
            continue
        serial = f', ATTRS{{serial}}=="{p.serial_number}"' if p.serial_number else ""
        match = (
            f'SUBSYSTEM=="tty", ATTRS{{idVendor}}=="{p.vid:04x}", ATTRS{{idProduct}}=="{p.pid:04x}"{serial}'
        )
        print(f'{match}, SYMLINK+="afn/machine-{n}", GROUP="dialout", MODE="0660"')
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from .fleet.service import Fleet, load_fleet_config

    try:
        cfg = load_fleet_config(args.config)
    except ConfigError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 2
    fleet = Fleet(cfg).start()
    print(
        f"afn-agent fleet: http://{cfg.host}:{fleet.port}/ (site {cfg.site}, broker {cfg.broker.host})",
        flush=True,
    )
    until_signal().wait()
    fleet.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import read_toml
    from .preflight import problems
    from .startup import api_port

    try:
        raw, _ = read_toml(Path(args.file))
    except ConfigError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return int(Exit.INVALID)
    if "fleet" in raw and "agent" not in raw:
        return _check_fleet(args.file)
    cfg = config_or_exit(args.file)
    found = problems(cfg, ports=not args.no_ports)
    if not args.no_ports and (taken := api_port(cfg)) is not None:
        found.append(taken.sentence + " (a running agent holds its own port: --no-ports skips this check)")
    for problem in found:
        print(f"afn-agent: {problem}", file=sys.stderr)
    if found:
        return 2
    print(
        f"{args.file}: ok - site {cfg.site}, agent {cfg.agent_id}, {len(cfg.machines)} machine(s): "
        + ", ".join(f"{m.id} ({m.profile} on {m.port})" for m in cfg.machines)
    )
    return 0


def cmd_config_files(args: argparse.Namespace) -> int:
    from .config_docs import write

    for path in write(Path(args.out)):
        print(path)
    return 0


def _check_fleet(path: str) -> int:
    from .fleet.service import load_fleet_config

    try:
        cfg = load_fleet_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"afn-agent: {line}", file=sys.stderr)
        return int(Exit.INVALID)
    print(f"{path}: ok - fleet dashboard of site {cfg.site} on {cfg.host}:{cfg.port}, "
          f"{len(cfg.managers)} manager(s), broker {cfg.broker.host}:{cfg.broker.port}")  # fmt: skip
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .agent import Agent

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .preflight import problems

    cfg = config_or_exit(args.config)
    found = problems(cfg, ports=not args.wait_for_ports)
    for problem in found:
        print(f"afn-agent: {problem}", file=sys.stderr)
    if found:
        print(f"afn-agent: not starting: {len(found)} problem(s) in {cfg.path}", file=sys.stderr)
        return 2
    from .ledger import LedgerError

    try:
        agent = Agent(cfg)
    except LedgerError as exc:
        return _not_starting(Failure(Exit.LEDGER, str(exc)))
    failure = api_port(cfg) or broker(cfg)
    if failure and failure.passing and not (cfg.broker and cfg.broker.required):
        print(f"afn-agent: {failure.sentence}; running without it: usage records wait in the outbox",
              file=sys.stderr, flush=True)  # fmt: skip
    elif failure:
        agent.ledger.close()
        return _not_starting(failure)
    turn, hup = threading.Event(), threading.Event()
    stop = until_signal(turn)
    signal.signal(signal.SIGHUP, _raiser(hup, turn))  # systemctl reload
    from .errors import AfnError
    from .systemd import notify

    try:
        agent.start()
    except RuntimeError as exc:  # the API's port, taken since the check
        agent.stop(f"not started: {exc}")
        return _not_starting(Failure(Exit.PORT_TAKEN, str(exc)))
    if not failure and (refusal := _broker_refusal(agent)):
        agent.stop(f"not started: {refusal.sentence}")
        return _not_starting(refusal)
    print(f"afn-agent: running {', '.join(agent.machines)}; ledger {agent.config.ledger_path}", flush=True)
    notify(f"READY=1\nSTATUS=running {len(agent.machines)} machine(s)")
    while not stop.is_set():  # the main thread sleeps until a signal: no timed wake-ups beside the machines
        turn.wait()
        turn.clear()
        if not hup.is_set():
            continue
        hup.clear()
        notify("RELOADING=1")
        try:
            agent.reload("signal:SIGHUP")
        except AfnError as exc:
            print(f"afn-agent: reload refused, nothing changed: {exc}", file=sys.stderr, flush=True)
        notify(f"READY=1\nSTATUS=running {len(agent.machines)} machine(s), configuration reloaded")
    notify("STOPPING=1")
    agent.stop("agent stopped by a signal", grace_s=agent.config.stop_grace_s)
    return 0


def _not_starting(failure: Failure) -> int:
    print(f"afn-agent: not starting: {failure.sentence}", file=sys.stderr)
    return int(failure.code)


def _broker_refusal(agent: Agent, wait_s: float = 10.0) -> Failure | None:
    """The broker's first answer to the agent's credentials: a refusal stops the start (nothing was
    published: a refused connection carries nothing). No answer in time is no refusal: the bus retries."""
    bus = agent.bus
    if bus is None:
        return None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not bus.connected.is_set() and bus.refused is None:
        time.sleep(0.05)
    return refused_sentence(agent.config, bus.refused) if bus.refused and not bus.connected.is_set() else None


def cmd_jobs_add(args: argparse.Namespace) -> int:
    from .agent import open_ledger
    from .intake import JobRefused, submit

    cfg = config_or_exit(args.config)
    ledger = open_ledger(cfg)
    try:
        cfg.machine(args.machine)
        who = {"member_id": args.member, "supervisor_id": args.supervisor}
        who.update(account=args.account, booking_id=args.booking)
        _, quote = submit(cfg, ledger, args.machine, Path(args.file), "cli", held=args.held, **who)
    except (ConfigError, JobRefused) as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 4 if isinstance(exc, JobRefused) else 2
    print(json.dumps(quote))
    return 0


JOB_FIELDS = ("id", "machine_id", "state", "name", "member_id", "supervisor_id", "account", "booking_id",
              "source", "bytes", "sha256", "created_at", "started_at", "ended_at", "stop_type",
              "reason")  # fmt: skip


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from .agent import open_ledger

    cfg = config_or_exit(args.config)
    jobs = open_ledger(cfg).jobs(args.machine)
    if args.json:
        shown = [{k: job[k] for k in JOB_FIELDS} | {"estimate": json.loads(job["estimate_json"] or "{}")}
                 for job in jobs]  # fmt: skip
        print(json.dumps(shown, indent=1, ensure_ascii=False))
        return 0
    for job in jobs:
        who = job["member_id"] or "-"
        print(f"{job['id']}  {job['machine_id']:12} {job['state']:11} {who:12} {job['name']}")
    return 0


def cmd_ledger_backup(args: argparse.Namespace) -> int:
    from .ledger.backup import backup

    copy = backup(config_or_exit(args.config).ledger_path, Path(args.to))  # a LedgerError exits 6 (cli.py)
    print(f"{copy.path}: {copy.bytes} bytes, {copy.jobs} job(s), {copy.usage_records} usage record(s), "
          "integrity ok")  # fmt: skip
    return 0


def cmd_ledger_export(args: argparse.Namespace) -> int:
    from .agent import open_ledger
    from .ledger.export import export, parse_day

    cfg = config_or_exit(args.config)
    try:
        since = parse_day(args.since, "--since")
        until = parse_day(args.until, "--until") if args.until else None
    except ValueError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(export(open_ledger(cfg), since, until, args.format))
    return 0


def _access(cfg: AgentConfig) -> tuple[Ledger, Directory, AccessPolicy]:
    from .access.decide import AccessPolicy
    from .access.directory import Directory
    from .agent import open_ledger

    if cfg.access is None:
        print(
            f"afn-agent: {cfg.path}: no [access] table (badge_secret and the offline policy)", file=sys.stderr
        )
        raise SystemExit(2)
    ledger = open_ledger(cfg)
    policy = AccessPolicy(
        cache_max_age_days=cfg.access.cache_max_age_days,
        managers_always=cfg.access.managers_always,
        opening_hours=dict(cfg.access.opening_hours),
        booking_required=tuple(m.id for m in cfg.machines if m.booking_required),
    )
    return ledger, Directory(ledger, cfg.access.badge_secret), policy


def cmd_members_import(args: argparse.Namespace) -> int:
    from .access.directory import DirectoryError
    from .access.member_file import load_snapshot_file

    cfg = config_or_exit(args.config)
    _, directory, _ = _access(cfg)
    meta = directory.meta()
    version = args.version if args.version is not None else (meta["version"] + 1 if meta else 1)
    try:
        snap = load_snapshot_file(args.file, version)
        now = directory.apply_snapshot(snap, f"file:{Path(args.file).name}")
    except (OSError, DirectoryError) as exc:
        said = str(exc) if str(exc).startswith(Path(args.file).name) else f"{args.file}: {exc}"
        print(f"afn-agent: {said}", file=sys.stderr)
        return 2
    n = len(snap.get("members", []))
    if now != snap.get("version"):
        older = f"version {snap.get('version')} is older than the cache ({now}); not applied"
        print(f"afn-agent: {args.file}: {older}", file=sys.stderr)
        return 1
    print(f"imported {n} member(s), directory version {now}")
    return 0


def cmd_members_check(args: argparse.Namespace) -> int:
    from .access.decide import decide
    from .access.directory import badge_hash
    from .ledger.usage import utc_now

    cfg = config_or_exit(args.config)
    ledger, directory, policy = _access(cfg)
    try:
        machine = cfg.machine(args.machine)
    except ConfigError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return 2
    row = ledger.machine(machine.id) or {}
    estimate = args.job_minutes * 60 if args.job_minutes is not None else None
    badge = badge_hash(directory.secret, args.badge)
    locked = bool(row.get("locked"))
    decision = decide(
        directory, policy, machine.id, machine.machine_class, badge, utc_now(), locked, estimate
    )
    out = decision.public()
    if args.json:
        print(json.dumps({**out, "machine": machine.id, "allowed": decision.allowed}, ensure_ascii=False))
        return 0 if decision.allowed else int(Exit.ACCESS_REFUSED)
    print(f"{out['code']}: {out['detail'] or 'may use ' + machine.id}"
          + (f" until {out['allowed_until']}" if out["allowed_until"] else "")
          + (f" ({out['member_name']}, {out['member_id']})" if out["member_id"] else ""))  # fmt: skip
    return 0 if decision.allowed else int(Exit.ACCESS_REFUSED)
