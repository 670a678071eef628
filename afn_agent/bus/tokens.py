"""Signed manager commands: HMAC-SHA256 over the canonical JSON, with an expiry and a one-time nonce.

Broker ACLs are often lax, so the agent trusts a command only for its signature; a nonce seen before
(kept in the ledger, so a restart does not forget it) or a token past its expiry is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from ..payload import Malformed, decode_json

COMMANDS = ("pause", "resume", "cancel", "lock", "unlock", "estop", "confirm", "clear-alarms", "pairing-code",
            "appkey-decision")
MAX_LIFETIME_S = 300.0  # a token valid longer than this is refused: replay windows stay short
CLOCK_SKEW_S = 30.0


class CommandRefused(ValueError):
    """A command that must not run; `code` is the reason published on events."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign(
    secret: str, command: str, machine: str, actor: str, ttl_s: float = 60.0, **args: Any
) -> dict[str, Any]:
    """A signed command, as the fleet dashboard or a manager's tool sends it."""
    now = time.time()
    fields = {
        "command": command,
        "machine": machine,
        "actor": actor,
        "args": args,
        "issued": round(now, 3),
        "expires": round(now + ttl_s, 3),
        "nonce": secrets.token_hex(16),
    }
    fields["sig"] = hmac.new(secret.encode(), _canonical(fields), hashlib.sha256).hexdigest()
    return fields


def verify(secret: str, payload: bytes, machine: str, now: float | None = None) -> dict[str, Any]:
    """The command if its signature, machine, times and shape hold; CommandRefused otherwise.

    The nonce is returned unchecked: the caller records it atomically (see Ledger.use_nonce).
    """
    now = time.time() if now is None else now
    try:
        msg = decode_json(payload, max_bytes=8192)
    except Malformed as exc:
        raise CommandRefused("malformed", f"command refused: {exc.reason}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("sig"), str):
        raise CommandRefused("malformed", "command has no signature")
    fields = {k: v for k, v in msg.items() if k != "sig"}
    want = hmac.new(secret.encode(), _canonical(fields), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, msg["sig"]):
        raise CommandRefused("bad_signature", "signature does not match")
    for key, kind in (("command", str), ("machine", str), ("actor", str), ("nonce", str), ("args", dict)):
        if not isinstance(fields.get(key), kind):
            raise CommandRefused("malformed", f"field {key!r} missing or not a {kind.__name__}")
    for key in ("issued", "expires"):
        if not isinstance(fields.get(key), int | float):
            raise CommandRefused("malformed", f"field {key!r} missing or not a number")
    if fields["command"] not in COMMANDS:
        raise CommandRefused("unknown_command", f"unknown command {fields['command']!r}")
    if fields["machine"] != machine:
        raise CommandRefused("wrong_machine", f"command is for {fields['machine']!r}, not {machine!r}")
    if fields["expires"] < now:
        raise CommandRefused("expired", f"token expired {now - fields['expires']:.0f} s ago")
    if fields["issued"] > now + CLOCK_SKEW_S or fields["expires"] - fields["issued"] > MAX_LIFETIME_S:
        raise CommandRefused("bad_lifetime", "token issued in the future or valid for too long")
    return fields
