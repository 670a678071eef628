"""OctoPrint clients that keep only the host of the URL they are given (octorest builds every request from
scheme and host, dropping `/octoprint/<machine>/`) still reach the right machine: a request to `/api/…`
whose key is limited to one machine goes to that machine's OctoPrint face. Any other key keeps reaching
the default machine (`[api] octoprint_machine`), as before.

Repeated slashes are merged first, as OctoPrint's server does (pyoctoprintapi, and so Home Assistant,
posts to `<base>//api/printer/bed`)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Authenticator


class MachineOfKey:
    def __init__(self, app: ASGIApp, auth: Authenticator, default: str | None, machines: list[str]) -> None:
        self.app, self.auth, self.default, self.machines = app, auth, default, set(machines)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in str(scope["path"]):
            path = re.sub("/{2,}", "/", str(scope["path"]))
            scope = {**scope, "path": path, "raw_path": path.encode()}
        if scope["type"] == "http" and str(scope["path"]).startswith("/api/"):
            caller = self.auth.identify(Request(scope))
            if caller is not None and len(caller.machines) == 1:
                (machine,) = caller.machines
                if machine != self.default and machine in self.machines:
                    path = f"/octoprint/{machine}{scope['path']}"
                    scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)
