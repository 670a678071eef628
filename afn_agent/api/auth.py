"""Who is calling: API keys (stored as SHA-256, compared in constant time), session tokens minted for
a badge session, and the kiosk — a browser on this very host, beside the machine."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from ..config import ApiConfig
from ..secret_text import new_secret

SESSION_TOKEN_S = 12 * 3600  # a token never outlives its session; this only bounds a forgotten one
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: role, name for the audit log, and what it may touch."""

    role: str  # slicer | manager | booking | session | kiosk
    name: str
    member: str | None = None
    machines: tuple[str, ...] = ()  # empty: all
    session_id: str | None = None
    quota_mb: float | None = None  # its jobs' files in the spool at once

    def may_use(self, machine_id: str) -> bool:
        return not self.machines or machine_id in self.machines


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and the hash to put in the config."""
    key = new_secret(32)
    return key, key_hash(key)


class Authenticator:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._tokens: dict[str, tuple[Caller, float]] = {}
        self._by_session: dict[str, str] = {}
        self._lock = threading.Lock()
        self.session_open: Callable[[str, str], bool] = lambda machine_id, session_id: True
        self.stored: Callable[[str], dict[str, Any] | None] = lambda sha256: None  # keys in the ledger

    def mint(self, machine_id: str, member_id: str, session_id: str) -> str:
        """A token acting for one member's session on one machine (given to the kiosk)."""
        token = new_secret(24)
        caller = Caller("session", f"session:{member_id}", member_id, (machine_id,), session_id,
                        self.config.key_quota_mb)  # fmt: skip
        with self._lock:
            self._tokens[key_hash(token)] = (caller, time.monotonic() + SESSION_TOKEN_S)
        return token

    def token_for_session(self, machine_id: str, session: dict[str, Any]) -> str:
        """The kiosk's token for the open session, minted once per session."""
        with self._lock:
            token = self._by_session.get(session["id"])
        if token is None:
            token = self.mint(machine_id, session["member_id"], session["id"])
            with self._lock:
                self._by_session[session["id"]] = token
        return token

    def revoke_session(self, session_id: str) -> None:
        with self._lock:
            self._by_session.pop(session_id, None)
            for h, (caller, _) in list(self._tokens.items()):
                if caller.session_id == session_id:
                    del self._tokens[h]

    def identify(self, request: Request) -> Caller | None:
        presented = (
            request.headers.get("x-api-key")
            or _bearer(request.headers.get("authorization", ""))
            or request.query_params.get("apikey")
        )
        if presented:
            h = key_hash(presented)
            found = None
            for key in self.config.keys:  # every key compared: timing says nothing about which matched
                if hmac.compare_digest(h, key.sha256):
                    quota = key.quota_mb or self.config.key_quota_mb
                    found = Caller(key.role, key.name, key.member, key.machines, quota_mb=quota)
            if found:
                return found
            if (row := self.stored(h)) is not None:  # a member's own key, or one added while running
                machines = tuple(json.loads(row["machines_json"]))
                return Caller(row["role"], f"key:{row['name']}", row["member_id"], machines,
                              quota_mb=self.config.key_quota_mb)  # fmt: skip
            with self._lock:
                entry = self._tokens.get(h)
            if entry and entry[1] > time.monotonic():
                caller = entry[0]
                if self.session_open(caller.machines[0], caller.session_id or ""):
                    return caller
                self.revoke_session(caller.session_id or "")  # the session ended: so did its token
            return None
        if self.config.kiosk_loopback and request.client and request.client.host in LOOPBACK:
            return Caller("kiosk", "kiosk", quota_mb=self.config.key_quota_mb)
        return None

    def require(self, request: Request, *roles: str, machine: str | None = None) -> Caller:
        """The caller if it holds one of `roles` (and may use `machine`); 401 or 403 otherwise."""
        caller = self.identify(request)
        if caller is None:
            raise HTTPException(401 if not _presented(request) else 403, "a valid API key is required")
        if caller.role not in roles:
            raise HTTPException(403, f"the {caller.role} role may not do this")
        if machine is not None and not caller.may_use(machine):
            raise HTTPException(403, f"this key may not use {machine}")
        return caller


def _bearer(value: str) -> str:
    return value[7:].strip() if value.lower().startswith("bearer ") else ""


def _presented(request: Request) -> bool:
    h = request.headers
    return bool(h.get("x-api-key") or h.get("authorization") or request.query_params.get("apikey"))
