"""Commands for a lab that runs without a booking system or without hardware: `report` (the month's
statement), `badge` (a card held to a simulated reader) and `directory sync` (a pull of the members now),
the last two through the agent's API; `appkeys` (applications asking for a key) through its ledger."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .cli_agent import config_or_exit
from .config import ANY_HOST
from .i18n import LANGUAGES
from .startup import Exit


def add_lab_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bg = sub.add_parser("badge", help='hold a card to a machine\'s simulated reader (reader = "sim": the '
                        "demo, or trying the agent without hardware), through the agent's API")  # fmt: skip
    bg.add_argument("uid", help="the card's UID in hex, e.g. 0A00A1A1A1")
    bg.add_argument("--machine", required=True, help="the machine's id")
    bg.add_argument("--config", help="the agent's configuration, for its API's address")
    bg.add_argument("--url", help="the agent's API instead, e.g. http://127.0.0.1:8080")
    bg.add_argument("--key", help="a manager's API key (default: the AFN_API_KEY environment variable)")
    bg.set_defaults(handler=cmd_badge)

    ds = sub.add_parser("directory", help="the member directory a running agent pulls (Fab-manager)")
    dsub = ds.add_subparsers(dest="what", required=True, metavar="sync")
    sy = dsub.add_parser("sync", help="pull the whole directory now; exit 1 if the pull failed")
    sy.add_argument("--config", help="the agent's configuration, for its API's address")
    sy.add_argument("--url", help="the agent's API instead, e.g. http://127.0.0.1:8080")
    sy.add_argument("--key", help="a manager's API key (default: the AFN_API_KEY environment variable)")
    sy.add_argument("--json", action="store_true", help="the sync status as one JSON object")
    sy.set_defaults(handler=cmd_directory_sync)

    ak = sub.add_parser("appkeys", help="applications asking for a key (Home Assistant's OctoPrint set-up): "
                        "list them, grant or deny one")  # fmt: skip
    ak.add_argument("--config", required=True, help="the agent's configuration (its ledger)")
    choice = ak.add_mutually_exclusive_group()
    choice.add_argument("--grant", metavar="ID", help="make the key when the application next asks for it")
    choice.add_argument("--deny", metavar="ID", help="refuse the request")
    ak.set_defaults(handler=cmd_appkeys)

    co = sub.add_parser("consume", help="a usage consumer for the booking side: records kept by id in SQLite "
                        "and acknowledged; run several with one --config to share the load")  # fmt: skip
    co.add_argument("--config", required=True, help="a consumer file: [consumer] site, store; [broker]")
    co.add_argument("--name", required=True, help="this instance's name (its MQTT client id)")
    co.set_defaults(handler=cmd_consume)

    rp = sub.add_parser("report", help="a month's statement per member and per machine: two CSV files and a "
                        "printable page, totals equal to the ledger's")  # fmt: skip
    rp.add_argument("--config", required=True, help="the agent's configuration (its ledger is read)")
    rp.add_argument("--month", required=True, help="the agent's local calendar month, e.g. 2026-11")
    rp.add_argument("--out", default=".", help="directory for the files (default: the current one)")
    rp.add_argument("--lang", choices=LANGUAGES, default="fr", help="the page's language (default fr)")
    rp.set_defaults(handler=cmd_report)


def agent_url(args: argparse.Namespace, command: str) -> str | int:
    """The agent's API address from --url or from its configuration; an exit code when there is none."""
    if args.url:
        return str(args.url).rstrip("/")
    if not args.config:
        print(f"afn-agent {command}: give --config (the agent's) or --url (its API)", file=sys.stderr)
        return int(Exit.INVALID)
    api = config_or_exit(args.config).api
    if api is None:
        print(f"afn-agent: {args.config}: no [api] table: the agent has no API to reach", file=sys.stderr)
        return int(Exit.INVALID)
    host = "127.0.0.1" if api.host in ANY_HOST else api.host
    return f"http://{host}:{api.port}"


def post(url: str, path: str, key: str | None, body: dict[str, Any], who: str, timeout: float = 10) -> Any:
    """POST to the agent's API; the answer's JSON, or `Failed()` once the refusal has been said."""
    headers = {"Content-Type": "application/json", "X-Api-Key": key or os.environ.get("AFN_API_KEY", "")}
    data = json.dumps(body).encode()
    request = urllib.request.Request(url + path, method="POST", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode("utf-8", "replace")
        try:
            said = json.loads(answer).get("error") or answer
        except (ValueError, AttributeError):
            said = answer
        print(f"afn-agent: {who}: {said} (HTTP {exc.code})", file=sys.stderr)
        return Failed()
    except OSError as exc:
        print(f"afn-agent: the agent's API at {url} cannot be reached ({exc})", file=sys.stderr)
        return Failed()


class Failed:
    """A call that was refused or did not reach the agent (already said on stderr)."""


def cmd_badge(args: argparse.Namespace) -> int:
    url = agent_url(args, "badge")
    if isinstance(url, int):
        return url
    if isinstance(post(url, f"/v1/machines/{args.machine}/sim-badge", args.key, {"uid": args.uid},
                       args.machine), Failed):  # fmt: skip
        return int(Exit.FAILED)
    print(f"card {args.uid} held to {args.machine}'s reader: its screen shows the decision")
    return 0


def cmd_directory_sync(args: argparse.Namespace) -> int:
    url = agent_url(args, "directory sync")
    if isinstance(url, int):
        return url
    status = post(url, "/v1/directory/sync", args.key, {}, "directory", timeout=600)
    if isinstance(status, Failed):
        return int(Exit.FAILED)
    if args.json:
        print(json.dumps(status))
    elif status["ok"]:
        print(f"directory pulled from {status['source']} in {status['requests']} requests")
    else:
        print(f"afn-agent: the pull failed, the cached directory stays in force: {status['error']}",
              file=sys.stderr)  # fmt: skip
    return 0 if status["ok"] else int(Exit.FAILED)


def cmd_report(args: argparse.Namespace) -> int:
    from .agent import open_ledger
    from .ledger.statement import statement, write

    cfg = config_or_exit(args.config)
    try:
        month = statement(open_ledger(cfg), args.month)
    except ValueError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return int(Exit.INVALID)
    for path in write(month, Path(args.out), cfg.site, args.lang):
        print(path)
    total = month.total
    amounts = ", ".join(f"{amount:.2f} {currency}" for currency, amount in sorted(total.amounts.items()))
    print(f"{args.month}: {total.jobs} job(s), {len(month.members)} member(s), {amounts or 'nothing billed'}")
    return 0


def cmd_appkeys(args: argparse.Namespace) -> int:
    """Beside the running agent, through its ledger (as `pair` and `api-key --config`): no key needed."""
    import getpass

    from .agent import open_ledger
    from .errors import NotFound
    from .ledger.appkeys import AppKeyRequests, describe
    from .ledger.keys import KeyBook
    from .publisher import Publisher

    ledger = open_ledger(config_or_exit(args.config))
    try:
        requests, actor = AppKeyRequests(KeyBook(ledger)), f"cli:{getpass.getuser()}"
        if not (args.grant or args.deny):
            waiting = requests.pending()
            for row in waiting:
                print(describe(row))
            if not waiting:
                print("no application waits for a key")
            return 0
        try:
            row = requests.decide(args.grant or args.deny, bool(args.grant), actor)
        except NotFound as exc:
            print(f"afn-agent appkeys: {exc}", file=sys.stderr)
            return 1
        ledger.audit(actor, "appkey-decision", row["decision"], row["machine_id"], None, request=row["id"])
        said = {"request": row["id"], "decision": row["decision"], "actor": actor}
        Publisher(ledger).event(row["machine_id"], "appkey_decided", said)  # the running agent's bus sends it
    finally:
        ledger.close()
    what = "granted: the application gets its key when it next asks" if args.grant else "denied"
    print(f"{row['id']} ({row['app']} on {row['machine_id']}): {what}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    """One instance of the booking side's usage consumer, until SIGTERM or Ctrl-C."""
    from .booking.usage_consumer import UsageConsumer, UsageStore, load
    from .cli_agent import until_signal
    from .config import ConfigError

    try:
        broker, sites, store, group = load(args.config)
    except ConfigError as exc:
        print(f"afn-agent: {exc}", file=sys.stderr)
        return int(Exit.INVALID)
    consumer = UsageConsumer(broker, sites, UsageStore(store), args.name, group).start()
    print(f"afn-agent consume: {args.name} in group {group!r}, sites {', '.join(sites)}, kept in {store}",
          flush=True)  # fmt: skip
    until_signal().wait()
    consumer.stop()
    print(f"{args.name}: {consumer.received} received, {consumer.new} new, {consumer.malformed} refused")
    return 0
