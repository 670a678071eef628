"""Fab-manager's Open API v1 as the member directory (docs/fab-manager.md).

Fab-manager (Sleede) is the booking system of many French fab labs. Its read-only Open API serves users,
trainings, user trainings, machines and reservations, paginated, behind a token. A full pull becomes a
directory snapshot; between full pulls a quick pull fetches what was created since the last one (new users,
new trainings, new reservations) and becomes a delta. Everything passes through the directory's own
validation, so a Fab-manager answer can never write anything a pushed snapshot could not.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..config_model import DirectoryTable
from ..ledger.usage import utc_now

API = "/open_api/v1"
MAX_PAGE_BYTES = 16 * 1024 * 1024  # one answer; a larger one is refused, not read into memory
MAX_PAGES = 2000  # per listing: a server that never stops paging is stopped here
RETRIED = {429, 500, 502, 503, 504}
NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
BATCH = 100  # user ids per request in a quick pull
OVERLAP = timedelta(minutes=5)  # a quick pull reaches back this far before the last one (clock skew)

Opener = Callable[..., Any]


class FabManagerError(Exception):
    """A pull that did not complete; the message says which request and why."""


@dataclass(frozen=True)
class Pulled:
    """What one pull brought: a directory snapshot or delta, and how many requests it took."""

    kind: str  # "snapshot" or "delta"
    doc: dict[str, Any]
    requests: int


class OpenApi:
    """Token-authenticated GETs, every page of a listing, retried with backoff on the errors that pass."""

    def __init__(
        self, settings: DirectoryTable, opener: Opener = urllib.request.urlopen,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.base = settings.url.rstrip("/") + API
        self.token = settings.token
        self.per_page = settings.per_page
        self.retries = settings.retries
        self.backoff_s = settings.backoff_s
        self.timeout_s = settings.timeout_s
        self.opener = opener
        self.sleep = sleep
        self.requests = 0

    def listing(self, resource: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of `resource` (`users`, …), page after page until a short or empty page, or until the
        server's `Link` header names no next page."""
        query = {**(params or {}), "page": 1, "per_page": self.per_page}
        url: str | None = f"{self.base}/{resource}?{_encode(query)}"
        for _ in range(MAX_PAGES):
            assert url is not None
            body, link = self.get(url)
            items = body.get(resource)
            if not isinstance(items, list):
                raise FabManagerError(f"{_path(url)}: the answer has no {resource!r} list")
            for item in items:
                if not isinstance(item, dict):
                    raise FabManagerError(f"{_path(url)}: an item of {resource!r} is not an object")
                yield item
            url = _next_page(url, link, len(items), self.per_page)
            if url is None:
                return
        raise FabManagerError(f"{resource}: more than {MAX_PAGES} pages; refusing to go on")

    def get(self, url: str) -> tuple[dict[str, Any], str]:
        """One JSON object and the `Link` header; 429 and 5xx and network errors retried with backoff."""
        request = urllib.request.Request(
            url, headers={"Authorization": f"Token token={self.token}", "Accept": "application/json"}
        )
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                with self.opener(request, timeout=self.timeout_s) as answer:
                    raw = answer.read(MAX_PAGE_BYTES + 1)
                    link = answer.headers.get("Link", "") or ""
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise FabManagerError(f"{_path(url)}: Fab-manager refused the token (401)") from None
                if exc.code not in RETRIED or attempt == self.retries:
                    raise FabManagerError(f"{_path(url)}: HTTP {exc.code}") from None
                self.sleep(_wait(exc.headers.get("Retry-After"), self.backoff_s, attempt))
            except (OSError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise FabManagerError(f"{_path(url)}: unreachable ({exc})") from None
                self.sleep(_wait(None, self.backoff_s, attempt))
        if len(raw) > MAX_PAGE_BYTES:
            raise FabManagerError(f"{_path(url)}: answer larger than {MAX_PAGE_BYTES // 2**20} MB")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise FabManagerError(f"{_path(url)}: the answer is not JSON") from None
        if not isinstance(doc, dict):
            raise FabManagerError(f"{_path(url)}: the answer is not a JSON object")
        return doc, link


class FabManager:
    """Pulls the directory from Fab-manager and says it in the directory's own snapshot and delta format."""

    def __init__(self, settings: DirectoryTable, api: OpenApi | None = None) -> None:
        self.settings = settings
        self.api = api or OpenApi(settings)
        self.last_pull: datetime | None = None  # start of the last pull that completed

    def pull(self, base_version: int | None, full: bool, now: datetime | None = None) -> Pulled:
        """A snapshot (full, or nothing cached, or no pull yet since start) or a delta on `base_version`."""
        started = now or utc_now()
        before = self.api.requests
        if full or base_version is None or self.last_pull is None:
            doc, kind = self._snapshot(started, (base_version or 0) + 1), "snapshot"
        else:
            doc, kind = self._delta(self.last_pull - OVERLAP, base_version), "delta"
        self.last_pull = started
        return Pulled(kind, doc, self.api.requests - before)

    # ---- the two pulls ------------------------------------------------------------------------------
    def _snapshot(self, now: datetime, version: int) -> dict[str, Any]:
        classes = self._training_classes()
        machines = self._machine_map()
        held = _held(classes, self.api.listing("user_trainings"))
        members = [self.member(u, held.get(_int(u.get("id"), "users[].id"), set()))
                   for u in self.api.listing("users")]  # fmt: skip
        since = now - timedelta(days=self.settings.reservations_days)
        return {"version": version, "members": members, "bookings": self._bookings(machines, since)}

    def _delta(self, since: datetime, base: int) -> dict[str, Any]:
        classes = self._training_classes()
        machines = self._machine_map()
        fresh = self.api.listing("users", {"created_after": _when(since)})
        changed = {_int(u.get("id"), "users[].id") for u in fresh}
        for ut in self.api.listing("user_trainings"):  # newest first: stop at the first one seen before
            if _time(ut.get("created_at"), "user_trainings.created_at") < since:
                break
            changed.add(_int(ut.get("user_id"), "user_trainings[].user_id"))
        members = []
        ids = sorted(changed)
        for at in range(0, len(ids), BATCH):  # the ids ride in the query string: a bounded number at once
            batch = ids[at : at + BATCH]
            held = _held(classes, self.api.listing("user_trainings", {"user_id[]": batch}))
            users = self.api.listing("users", {"user_id[]": batch})
            members += [self.member(u, held.get(_int(u.get("id"), "users[].id"), set())) for u in users]
        return {"version": base + 1, "base": base, "upsert_members": members,
                "upsert_bookings": self._bookings(machines, since)}  # fmt: skip

    # ---- mapping ----------------------------------------------------------------------------------
    def member(self, user: dict[str, Any], classes: set[str]) -> dict[str, Any]:
        """A Fab-manager user as a directory member: their badge from the configured field, their role
        from the configured user ids or groups, their trainings as machine classes."""
        uid = _int(user.get("id"), "users[].id")
        badge = user.get(self.settings.badge_field)
        group: dict[str, Any] = user["group"] if isinstance(user.get("group"), dict) else {}
        marks = {str(uid), f"group:{group.get('slug')}"}
        roles = ["member"]
        if marks & {str(x) for x in self.settings.trainers}:
            roles.append("trainer")
        if marks & {str(x) for x in self.settings.managers}:
            roles.append("manager")
        return {
            "id": str(uid),
            "name": str(user.get("full_name") or user.get("email") or uid),
            "roles": roles,
            "badges": [str(badge)] if isinstance(badge, str | int) and str(badge).strip() else [],
            "trainings": [{"class": c} for c in sorted(classes)],
        }

    def _training_classes(self) -> dict[int, str]:
        """Fab-manager training id → machine class, from `[directory.trainings]` (keys: id or slug)."""
        mapping = self.settings.trainings
        out = {}
        for t in self.api.listing("trainings"):
            tid = _int(t.get("id"), "trainings[].id")
            c = mapping.get(str(tid)) or mapping.get(str(t.get("slug")))
            if c is not None:
                out[tid] = c
        return out

    def _machine_map(self) -> dict[int, list[str]]:
        """Fab-manager machine id → this lab's machine ids, from `[directory.machines]` (id or slug)."""
        mapping = self.settings.machines
        out = {}
        for m in self.api.listing("machines"):
            mid = _int(m.get("id"), "machines[].id")
            ours = mapping.get(str(mid)) or mapping.get(str(m.get("slug")))
            if ours:
                out[mid] = [ours] if isinstance(ours, str) else list(ours)
        return out

    def _bookings(self, machines: dict[int, list[str]], since: datetime) -> list[dict[str, Any]]:
        """Machine reservations made since `since`, one booking per slot not cancelled and per machine."""
        params = {"reservable_type": "Machine", "after": _when(since)}
        out = []
        for r in self.api.listing("reservations", params):
            if r.get("reservable_type") != "Machine":
                continue
            ours = machines.get(_int(r.get("reservable_id"), "reservations[].reservable_id"), [])
            slots = r.get("reserved_slots")
            for i, slot in enumerate(slots if isinstance(slots, list) else []):
                if not isinstance(slot, dict) or slot.get("canceled_at"):
                    continue
                for machine in ours:
                    out.append({
                        "id": f"fm-{r.get('id')}-{i}-{machine}", "machine": machine,
                        "member": str(_int(r.get("user_id"), "reservations[].user_id")),
                        "start": str(slot.get("start_at")), "end": str(slot.get("end_at")),
                    })  # fmt: skip
        return out


def _held(classes: dict[int, str], user_trainings: Iterator[dict[str, Any]]) -> dict[int, set[str]]:
    """Fab-manager user id -> the machine classes their trainings open."""
    held: dict[int, set[str]] = {}
    for ut in user_trainings:
        if (c := classes.get(_int(ut.get("training_id"), "user_trainings[].training_id"))) is not None:
            held.setdefault(_int(ut.get("user_id"), "user_trainings[].user_id"), set()).add(c)
    return held


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FabManagerError(f"{where}: expected a whole number, got {value!r}")
    return value


def _time(value: Any, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise FabManagerError(f"{where}: expected an ISO time, got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=utc_now().tzinfo)


def _when(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _encode(query: dict[str, Any]) -> str:
    return urllib.parse.urlencode(query, doseq=True)


def _path(url: str) -> str:
    """The request as it may be logged: path and query, never the host's credentials."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _next_page(url: str, link: str, count: int, per_page: int) -> str | None:
    """The server's `Link: <…>; rel="next"` if it sent one, else the next page number while pages are full."""
    if link:
        found = NEXT.search(link)
        if found is None:
            return None
        nxt = urllib.parse.urljoin(url, found.group(1))
        if urllib.parse.urlsplit(nxt).netloc != urllib.parse.urlsplit(url).netloc:
            raise FabManagerError(f"{_path(url)}: the next page points to another host")
        return str(nxt)
    if count < per_page:
        return None
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    query["page"] = [str(int(query.get("page", ["1"])[0]) + 1)]
    return urllib.parse.urlunsplit(parts._replace(query=_encode(query)))


def _wait(retry_after: str | None, backoff_s: float, attempt: int) -> float:
    """Retry-After when the server gives one in seconds (at most a minute), else doubling with jitter."""
    if retry_after and retry_after.strip().isdigit():
        return min(60.0, float(retry_after))
    return float(backoff_s * (2**attempt) * (0.5 + random.random()))
