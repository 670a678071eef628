"""Fab-manager's Open API v1 on loopback HTTP, built from Fab-manager's own API documentation
(sleede/fab-manager, app/doc/open_api/v1/*_doc.rb and app/controllers/open_api/v1/*.rb), field for field:

- every route answers 401 `{"errors": ["Bad credentials"]}` without `Authorization: Token token=<token>`
  (Rails' token authentication, which also takes `Bearer <token>`);
- `GET /open_api/v1/users` (email, user_id[], created_after; ordered by created_at descending; paginated
  only when `page` is given), `trainings` and `machines` (created_at ascending), `user_trainings`
  (training_id[], user_id[]; created_at descending; a `user` object, or a `training` object when scoped to
  users), `reservations` (after, before, user_id[], reservable_type, reservable_id[]; created_at
  descending; `reserved_slots` with `canceled_at`, `availability_id`, `start_at`, `end_at`);
- pagination as the api-pagination gem does it (`Rails::Pagination`): `page`, `per_page` (default 20),
  a `Link` header with rel first/prev/next/last, and `Total` and `Per-Page` headers.

The records themselves are those of the documentation's examples (users 1743-1746 with their external ids,
trainings 1-6, machines 1-5); a test adds its own. `fail_next` answers that many requests with 503,
`retry_after` adds the header; `down` answers everything with 500."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

TZ = "+01:00"


def stamp(t: datetime) -> str:
    """Fab-manager's time format: milliseconds and the server's offset (Europe/Paris in the docs)."""
    local = t.astimezone(datetime.fromisoformat("2000-01-01T00:00:00" + TZ).tzinfo)
    return local.isoformat(timespec="milliseconds")


def group(gid: int) -> dict[str, Any]:
    return [{"id": 1, "name": "standard, association", "slug": "standard"},
            {"id": 2, "name": "étudiant, - de 25 ans, enseignant, demandeur d'emploi", "slug": "student"},
            {"id": 3, "name": "Équipe du fab lab", "slug": "staff"}][gid - 1]  # fmt: skip


class FabManagerServer:
    def __init__(self, token: str = "fab-manager-open-api-token-0123") -> None:
        self.token = token
        self.fail_next = 0
        self.retry_after: str | None = None
        self.down = False
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.users: list[dict[str, Any]] = []
        for uid, external, name, g, created in (
            (1743, "P4172-4", "xxx xxxxxxx", 1, "2016-05-03T12:24:38.724+02:00"),
            (1744, "J5900-1", "xxxxxxx xxxx", 1, "2016-05-03T13:51:03.223+02:00"),
            (1745, "J5846-4", "xxxxx xxxxx", 2, "2016-05-03T15:21:13.125+02:00"),
            (1746, "J5821-4", "xxxx xxxx", 1, "2016-05-04T17:21:48.403+02:00"),
        ):
            self.users.append(self._user(uid, external, name, g, created))
        self.trainings = [
            self._training(1, "Formation Imprimante 3D", "formation-imprimante-3d", "2014-06-30T03:32:32.126+02:00"),
            self._training(2, "Formation Laser / Vinyle", "formation-laser-vinyle", "2014-06-30T03:32:32.138+02:00"),
            self._training(3, "Formation Petite fraiseuse numerique", "formation-petite-fraiseuse-numerique",
                           "2014-06-30T03:32:32.164+02:00", disabled=True),
            self._training(4, "Formation Shopbot Grande Fraiseuse", "formation-shopbot-grande-fraiseuse",
                           "2014-06-30T03:32:32.168+02:00", disabled=False),
            self._training(5, "Formation logiciel 2D", "formation-logiciel-2d", "2014-06-30T09:37:42.778+02:00"),
            self._training(6, "Pas de Reservation", "pas-de-reservation", "2014-07-22T14:18:11.784+02:00"),
        ]  # fmt: skip
        self.machines = [
            self._machine(1, "Epilog EXT36 Laser", "decoupeuse-laser", "2014-06-30T03:32:31.972+02:00"),
            self._machine(2, "Découpeuse vinyle", "decoupeuse-vinyle", "2014-06-30T03:32:31.977+02:00"),
            self._machine(3, "Shopbot / Grande fraiseuse", "shopbot-grande-fraiseuse",
                          "2014-06-30T03:32:31.982+02:00", disabled=False),
            self._machine(4, "Imprimante 3D - Ultimaker", "imprimante-3d", "2014-06-30T03:32:31.986+02:00"),
            self._machine(5, "Petite Fraiseuse", "petite-fraiseuse", "2014-06-30T03:32:31.989+02:00", disabled=True),
        ]  # fmt: skip
        self.user_trainings: list[dict[str, Any]] = []
        self.reservations: list[dict[str, Any]] = []
        self._next_id = 3300
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fab-manager", daemon=True)

    # ---- the records ------------------------------------------------------------------------------
    @staticmethod
    def _user(uid: int, external: str | None, name: str, g: int, created: str) -> dict[str, Any]:
        first, _, last = name.partition(" ")
        return {"id": uid, "email": f"user{uid}@example.org", "created_at": created, "external_id": external,
                "full_name": name, "first_name": first, "last_name": last, "gender": "woman",
                "organization": False, "address": "", "group": group(g)}  # fmt: skip

    @staticmethod
    def _training(tid: int, name: str, slug: str, created: str, disabled: bool | None = None) -> dict[str, Any]:
        return {"id": tid, "name": name, "slug": slug, "disabled": disabled,
                "updated_at": created, "created_at": created, "nb_total_places": 8, "description": None}  # fmt: skip

    @staticmethod
    def _machine(mid: int, name: str, slug: str, created: str, disabled: bool | None = None) -> dict[str, Any]:
        return {"id": mid, "name": name, "slug": slug, "disabled": disabled, "updated_at": created,
                "created_at": created, "description": f"La machine {name}", "spec": ""}  # fmt: skip

    def add_user(self, uid: int, external: str | None, name: str, g: int = 1, created: datetime | None = None) -> None:
        with self.lock:
            self.users.append(self._user(uid, external, name, g, stamp(created or datetime.now(UTC))))

    def add_training(self, user_id: int, training_id: int, created: datetime | None = None) -> None:
        when = stamp(created or datetime.now(UTC))
        with self.lock:
            self._next_id += 1
            self.user_trainings.append({"id": self._next_id, "user_id": user_id, "training_id": training_id,
                                        "updated_at": when, "created_at": when})  # fmt: skip

    def add_reservation(
        self, user_id: int, machine_id: int, start: datetime, end: datetime, created: datetime | None = None,
        canceled: bool = False,
    ) -> int:  # fmt: skip
        when = stamp(created or datetime.now(UTC))
        with self.lock:
            self._next_id += 1
            self.reservations.append({
                "id": self._next_id, "user_id": user_id, "reservable_id": machine_id,
                "reservable_type": "Machine", "updated_at": when, "created_at": when,
                "reserved_slots": [{"canceled_at": when if canceled else None, "availability_id": 5000 + self._next_id,
                                    "start_at": stamp(start), "end_at": stamp(end)}],
            })  # fmt: skip
            return self._next_id

    # ---- the routes -------------------------------------------------------------------------------
    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[list[dict[str, Any]], bool]:
        """The items of a listing and whether this route is paginated without `page` too."""
        with self.lock:
            if path == "users":
                items = sorted(self.users, key=lambda u: _t(u["created_at"]), reverse=True)
                if "email" in query:
                    items = [u for u in items if u["email"] in {e.lower() for e in query["email"]}]
                if ids := _ids(query, "user_id"):
                    items = [u for u in items if u["id"] in ids]
                if "created_after" in query:
                    after = _t(query["created_after"][0])
                    items = [u for u in items if _t(u["created_at"]) >= after]
                return items, False
            if path == "trainings":
                return sorted(self.trainings, key=lambda t: _t(t["created_at"])), True
            if path == "machines":
                items = sorted(self.machines, key=lambda m: _t(m["created_at"]))
                if ids := _ids(query, "machine_id"):
                    items = [m for m in items if m["id"] in ids]
                return items, True
            if path == "user_trainings":
                return self._user_trainings(query), True
            if path == "reservations":
                return self._reservations(query), True
        raise KeyError(path)

    def _user_trainings(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        items = sorted(self.user_trainings, key=lambda x: _t(x["created_at"]), reverse=True)
        if ids := _ids(query, "training_id"):
            items = [x for x in items if x["training_id"] in ids]
        users = _ids(query, "user_id")
        if users:
            items = [x for x in items if x["user_id"] in users]
        out = []
        for x in items:
            if users:
                t = next(t for t in self.trainings if t["id"] == x["training_id"])
                extra = {"training": {k: t[k] for k in ("id", "name", "slug", "updated_at", "created_at")}}
            else:
                extra = {"user": self._short_user(x["user_id"])}
            out.append({**x, **extra})
        return out

    def _reservations(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        items = sorted(self.reservations, key=lambda r: _t(r["created_at"]), reverse=True)
        if "after" in query:
            items = [r for r in items if _t(r["created_at"]) >= _t(query["after"][0])]
        if "before" in query:
            items = [r for r in items if _t(r["created_at"]) <= _t(query["before"][0])]
        if ids := _ids(query, "user_id"):
            items = [r for r in items if r["user_id"] in ids]
        if "reservable_type" in query:
            items = [r for r in items if r["reservable_type"] == query["reservable_type"][0]]
        if ids := _ids(query, "reservable_id"):
            items = [r for r in items if r["reservable_id"] in ids]
        out = []
        for r in items:
            m = next((m for m in self.machines if m["id"] == r["reservable_id"]), None)
            reservable = {k: m[k] for k in ("id", "name", "slug", "updated_at", "created_at")} if m else {}
            out.append({**r, "user": self._short_user(r["user_id"]), "reservable": reservable})
        return out

    def _short_user(self, uid: int) -> dict[str, Any]:
        u = next((u for u in self.users if u["id"] == uid), None)
        return {k: u[k] for k in ("id", "email", "created_at", "full_name")} if u else {"id": uid}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fm = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                fm.requests.append(self.path)
                if fm.down:
                    return self.send(500, {"error": ["Server error", "down"]})
                if fm.fail_next > 0:
                    fm.fail_next -= 1
                    return self.send(503, {"error": "unavailable"}, {"Retry-After": fm.retry_after} if fm.retry_after else {})
                auth = self.headers.get("Authorization", "")
                given = auth.removeprefix("Token ").removeprefix("Bearer ").removeprefix("token=").strip('"')
                if not auth.startswith(("Token ", "Bearer ")) or given != fm.token:
                    return self.send(401, {"errors": ["Bad credentials"]})
                if not parts.path.startswith("/open_api/v1/"):
                    return self.send(404, {"errors": ["Not found"]})
                resource = parts.path.removeprefix("/open_api/v1/")
                query = urllib.parse.parse_qs(parts.query)
                try:
                    items, always = fm.answer(resource, query)
                except KeyError:
                    return self.send(404, {"errors": ["Not found"]})
                if "page" not in query and not always:
                    return self.send(200, {resource: items})
                page = int(query.get("page", ["1"])[0])
                per = int(query.get("per_page", ["20"])[0])
                last = max(1, -(-len(items) // per))
                links = []
                for rel, n in (("first", 1), ("prev", page - 1), ("next", page + 1), ("last", last)):
                    if (rel in ("first", "prev") and page > 1) or (rel in ("next", "last") and page < last):
                        q = {**{k: v for k, v in query.items()}, "page": [str(n)], "per_page": [str(per)]}
                        links.append(f'<{fm.url}{parts.path}?{urllib.parse.urlencode(q, doseq=True)}>; rel="{rel}"')
                headers = {"Total": str(len(items)), "Per-Page": str(per)}
                if links:
                    headers["Link"] = ", ".join(links)
                self.send(200, {resource: items[(page - 1) * per : page * per]}, headers)

            def send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def start(self) -> FabManagerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ids(query: dict[str, list[str]], name: str) -> set[int]:
    return {int(v) for v in query.get(name, []) + query.get(f"{name}[]", [])}


def hours(h: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=h)
