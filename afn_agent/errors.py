"""One error family: every refusal the agent makes carries the HTTP status it maps to and a reason code
that a client can branch on (the sentence is for people, the code for programs).

The API has one handler for the family (api/server.py). Before it, routes caught any ValueError and called
it `job_overruns_booking`, an illegal job transition included.
"""

from __future__ import annotations

from typing import Any

from .i18n import Msg


class AfnError(Exception):
    """Base of the family. Subclasses set `status` and `code`; an instance may narrow `code`."""

    status = 500
    code = "internal"

    said: Msg | None = None  # the reason as a message, for a person in their language

    def __init__(self, message: str | Msg, *, code: str | None = None) -> None:
        """A plain sentence (for programs and logs), or a Msg: then the English words are the sentence
        and the body carries the reason's key and its words in every language."""
        if isinstance(message, Msg):
            self.said = message
            message = message.words()["en"]
        super().__init__(message)
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self), "detail": str(self), "code": self.code}
        if self.said is not None:
            out["reason"] = self.said.key
            out["words"] = self.said.words()
        return out


class InvalidInput(AfnError, ValueError):
    """What was sent cannot be read or does not fit (a file, a document, a value)."""

    status = 422
    code = "invalid"


class Conflict(AfnError, ValueError):
    """The request is sound but the state of things does not allow it now."""

    status = 409
    code = "conflict"


class StorageUnavailable(AfnError):
    """The disk or the ledger cannot take a write now."""

    status = 507
    code = "storage-full"


class Busy(AfnError):
    """Too many of something at once (requests waiting, attempts): later, not never."""

    status = 429
    code = "busy"


class NotFound(AfnError, LookupError):
    """No such machine or job."""

    status = 404
    code = "not-found"  # as every other 404 the API gives
