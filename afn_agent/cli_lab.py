"""Commands for a lab that runs without a booking system or without hardware: `report` (the month's
statement) and `badge` (a card held to a simulated reader, through the agent's API)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .cli_agent import config_or_exit
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

    rp = sub.add_parser("report", help="a month's statement per member and per machine: two CSV files and a "
                        "printable page, totals equal to the ledger's")  # fmt: skip
    rp.add_argument("--config", required=True, help="the agent's configuration (its ledger is read)")
    rp.add_argument("--month", required=True, help="the agent's local calendar month, e.g. 2026-11")
    rp.add_argument("--out", default=".", help="directory for the files (default: the current one)")
    rp.add_argument("--lang", choices=LANGUAGES, default="fr", help="the page's language (default fr)")
    rp.set_defaults(handler=cmd_report)


def cmd_badge(args: argparse.Namespace) -> int:
    if not args.url and not args.config:
        print("afn-agent badge: give --config (the agent's) or --url (its API)", file=sys.stderr)
        return int(Exit.INVALID)
    url = args.url
    if not url:
        api = config_or_exit(args.config).api
        if api is None:
            print(f"afn-agent: {args.config}: no [api] table: the agent has no API to badge through",
                  file=sys.stderr)  # fmt: skip
            return int(Exit.INVALID)
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
        url = f"http://{host}:{api.port}"
    key = args.key or os.environ.get("AFN_API_KEY", "")
    headers = {"Content-Type": "application/json", "X-Api-Key": key}
    target = f"{url.rstrip('/')}/v1/machines/{args.machine}/sim-badge"
    body = json.dumps({"uid": args.uid}).encode()
    request = urllib.request.Request(target, method="POST", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode("utf-8", "replace")
        try:
            said = json.loads(answer).get("error") or answer
        except (ValueError, AttributeError):
            said = answer
        print(f"afn-agent: {args.machine}: {said} (HTTP {exc.code})", file=sys.stderr)
        return int(Exit.FAILED)
    except OSError as exc:
        print(f"afn-agent: the agent's API at {url} cannot be reached ({exc})", file=sys.stderr)
        return int(Exit.FAILED)
    print(f"card {args.uid} held to {args.machine}'s reader: its screen shows the decision")
    return 0


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
