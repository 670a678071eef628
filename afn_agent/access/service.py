"""Access for one agent: its readers, the cached directory and its sync, and the sessions.

A raw badge UID exists only between a reader and `badge_uid()`, which hashes it at once.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..config import AgentConfig
from ..ledger import Ledger
from ..ledger.usage import iso, parse_iso, utc_now
from ..payload import decode_json
from .decide import AccessPolicy, Decision
from .directory import Directory, DirectoryError, badge_hash
from .fab_manager import FabManager, FabManagerError
from .readers import EvdevReader, PcscReader, Reader, ReaderLoop, SimReader, UartReader
from .sessions import Emit, Sessions

log = logging.getLogger("afn_agent.access")


def make_reader(spec: str) -> Reader:
    """`evdev:/dev/input/by-id/…`, `uart:/dev/ttyUSB0[@9600]`, `pcsc[:name]` or `sim`."""
    kind, _, arg = spec.partition(":")
    if kind == "evdev":
        return EvdevReader(arg)
    if kind == "uart":
        port, _, baud = arg.partition("@")
        return UartReader(port, int(baud) if baud else 9600)
    if kind == "pcsc":
        return PcscReader(arg)
    if kind == "sim":
        return SimReader(arg or "sim")
    raise ValueError(f"unknown reader {spec!r}")


@dataclass(frozen=True)
class SyncStatus:
    """How the directory's pulls go, for /health, the metrics and the manager: replaced whole by the sync."""

    source: str | None = None  # "fab-manager", "http" or None (pushed, or nothing)
    ok: bool = True
    last_ok: str | None = None
    last_full: str | None = None
    error: str | None = None
    failing_since: str | None = None
    failures: int = 0  # in a row
    requests: int = 0  # of the last pull

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def failed(self, error: str, now: datetime) -> SyncStatus:
        """One more pull failed: said until one succeeds."""
        return replace(self, ok=False, error=error, failures=self.failures + 1,
                       failing_since=self.failing_since or iso(now))  # fmt: skip

    def succeeded(self, now: datetime, **more: Any) -> SyncStatus:
        return replace(self, ok=True, error=None, failures=0, failing_since=None, last_ok=iso(now), **more)


class Access:
    def __init__(self, config: AgentConfig, ledger: Ledger, emit: Emit) -> None:
        assert config.access is not None
        self.config = config
        self.settings = config.access
        self.emit = emit
        self.directory = Directory(ledger, self.settings.badge_secret)
        self.policy = _policy(config)
        classes = {m.id: m.machine_class for m in config.machines}
        auto = {m.id: m.start_on_badge for m in config.machines}
        self.sessions = Sessions(ledger, self.directory, self.policy, classes, emit, auto)
        self.readers: dict[str, ReaderLoop] = {}
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._pulling = threading.Lock()  # one pull at a time: the loop's or one asked for
        self.fab = FabManager(config.directory) if config.directory is not None else None
        source = "fab-manager" if self.fab else ("http" if self.settings.sync_url else None)
        self.sync_status = SyncStatus(source)

    def start(self) -> Access:
        for m in self.config.machines:
            if m.reader:
                self._start_reader(m.id, m.reader)
        if self.settings.sync_url or self.fab is not None:
            self._sync_thread = threading.Thread(target=self._sync_loop, name="directory-sync", daemon=True)
            self._sync_thread.start()
        return self

    def _start_reader(self, machine_id: str, spec: str) -> None:
        loop = ReaderLoop(
            make_reader(spec),
            functools.partial(self.badge_uid, machine_id),
            functools.partial(self._reader_state, machine_id),
            debounce_s=self.settings.debounce_s,
        )
        self.readers[machine_id] = loop.start()

    def reconfigure(self, config: AgentConfig) -> list[str]:
        """A reloaded configuration: new rules for the next badge; a machine whose reader changed gets
        the new one now (sessions stay open). Returns the machines whose reader was replaced."""
        assert config.access is not None
        old = {m.id: m.reader for m in self.config.machines}
        self.config, self.settings = config, config.access
        self.policy = _policy(config)
        self.sessions.policy = self.policy
        self.sessions.auto_start = {m.id: m.start_on_badge for m in config.machines}
        self.sessions.classes = {m.id: m.machine_class for m in config.machines}  # trainings are per class
        replaced = []
        for m in config.machines:
            if old.get(m.id) == m.reader:
                continue
            if (loop := self.readers.pop(m.id, None)) is not None:
                loop.stop()
            if m.reader:
                self._start_reader(m.id, m.reader)
            replaced.append(m.id)
        return replaced

    def stop(self) -> None:
        self._stop.set()
        for loop in self.readers.values():
            loop.stop()

    def badge_uid(self, machine_id: str, uid: str) -> Decision:
        """A badge read: hashed here, then decided on."""
        try:
            hashed = badge_hash(self.settings.badge_secret, uid)
        except DirectoryError:
            return Decision("unknown_badge", detail="unreadable badge")
        return self.sessions.badge(machine_id, hashed)

    def sim_reader(self, machine_id: str) -> SimReader:
        reader = self.readers[machine_id].reader
        if not isinstance(reader, SimReader):
            raise TypeError(f"{machine_id} has no simulated reader")
        return reader

    # ---- directory sync -----------------------------------------------------------------------------
    def on_directory(self, kind: str, payload: bytes) -> None:
        """A snapshot or delta from the booking system over MQTT."""
        try:
            doc = decode_json(payload)
            if kind == "snapshot":
                version = self.directory.apply_snapshot(doc, "mqtt")
                self.emit("_directory", "directory-synced", {"version": version, "source": "mqtt"})
            elif not self.directory.apply_delta(doc, "mqtt"):
                log.info(
                    "delta %s does not apply to the cached version; waiting for a snapshot",
                    doc.get("version"),
                )
        except (ValueError, DirectoryError) as exc:  # Malformed (too large, deep, not JSON) is one
            log.warning("directory %s refused: %s", kind, exc)
            self.emit("_directory", "directory-refused", {"kind": kind, "reason": str(exc)})

    def sync_now(self, opener: Callable[..., Any] = urllib.request.urlopen) -> int | None:
        """Pull from `sync_url?version=<cached>`: the answer is `{"delta": …}` on top of the cached
        version and/or `{"snapshot": …}` (or a bare snapshot); a delta that does not apply brings a
        request for `version=0`, a full snapshot."""
        meta = self.directory.meta()
        version = meta["version"] if meta else 0
        try:
            doc = self._get(f"{self.settings.sync_url}?version={version}", opener)
            if "delta" in doc and self.directory.apply_delta(doc["delta"], "http"):
                return int(doc["delta"]["version"])
            if "snapshot" not in doc and "members" not in doc:  # a delta we cannot use: ask for all
                doc = self._get(f"{self.settings.sync_url}?version=0", opener)
            version = self.directory.apply_snapshot(doc.get("snapshot", doc), "http")
        except (OSError, ValueError, DirectoryError) as exc:
            log.warning("directory sync from %s failed: %s", self.settings.sync_url, exc)
            self.sync_status = self.sync_status.failed(str(exc), utc_now())
            self.emit("_directory", "directory-sync-failed", {"reason": str(exc)})
            return None
        self.sync_status = self.sync_status.succeeded(utc_now())
        return version

    def _reader_state(self, machine_id: str, state: str, why: str) -> None:
        self.emit(machine_id, "reader-" + state, {"reason": why})

    def _get(self, url: str, opener: Callable[..., Any]) -> dict[str, Any]:
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.settings.sync_token:
            req.add_header("Authorization", f"Bearer {self.settings.sync_token}")
        with opener(req, timeout=20) as resp:
            doc = json.loads(resp.read())
        if not isinstance(doc, dict):
            raise ValueError("the directory answered something other than a JSON object")
        return doc

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            if self.fab is not None:
                self.pull_fab_manager()
                assert self.config.directory is not None
                self._stop.wait(self.config.directory.every_s)
            else:
                self.sync_now()
                self._stop.wait(self.settings.sync_every_s)

    def pull_fab_manager(self, full: bool = False) -> SyncStatus:
        """One pull from Fab-manager: a full one when asked, when due, or first after start; a failure keeps
        the cached directory in force and is said (status, event, audit) until a pull succeeds."""
        assert self.fab is not None and self.config.directory is not None
        with self._pulling:
            now, status = utc_now(), self.sync_status
            due = status.last_full is None or (
                (now - parse_iso(status.last_full)).total_seconds() >= self.config.directory.full_every_s
            )
            meta = self.directory.meta()
            try:
                pulled = self.fab.pull(meta["version"] if meta else None, full or due, now)
                if pulled.kind == "snapshot":
                    version = self.directory.apply_snapshot(pulled.doc, "fab-manager")
                elif self.directory.apply_delta(pulled.doc, "fab-manager"):
                    version = pulled.doc["version"]
                else:  # the cache moved meanwhile (a push): the next pull is a full one
                    self.fab.last_pull = None
                    raise FabManagerError("the cached directory changed during the pull; pulling all next")
            except (FabManagerError, DirectoryError, OSError, ValueError) as exc:
                if isinstance(exc, DirectoryError):  # what Fab-manager sent cannot be cached: pull all next
                    self.fab.last_pull = None
                self.sync_status = status.failed(str(exc), now)
                log.warning("directory pull from Fab-manager failed: %s", exc)
                failed = {"reason": str(exc), "source": "fab-manager"}
                self.emit("_directory", "directory-sync-failed", failed)
                return self.sync_status
            self.sync_status = status.succeeded(
                now, last_full=iso(now) if pulled.kind == "snapshot" else status.last_full,
                requests=pulled.requests,
            )
            if pulled.kind == "snapshot" or status.failures:
                self.emit("_directory", "directory-synced",
                          {"version": version, "source": "fab-manager", "kind": pulled.kind})  # fmt: skip
            return self.sync_status


def _policy(config: AgentConfig) -> AccessPolicy:
    """The access rules of a configuration (built again on a reload)."""
    settings = config.access
    assert settings is not None
    return AccessPolicy(
        cache_max_age_days=settings.cache_max_age_days,
        managers_always=settings.managers_always,
        opening_hours=dict(settings.opening_hours),
        booking_required=tuple(m.id for m in config.machines if m.booking_required),
        supervisor_window_s=settings.supervisor_window_s,
        session_idle_s=settings.session_idle_s,
    )
