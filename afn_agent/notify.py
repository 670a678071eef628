"""Notifications through Apprise (e-mail, ntfy, Telegram, Matrix, Discord … one URL each): a member's
job done, failed or waiting for a person, to the member's own targets (opted in through the directory);
alarms and a backlog of undelivered usage records, to the managers. Texts come from the catalogues, in the
reader's language.

The notifier owns its thread and its queue. Anyone may `offer` it an event; offering never blocks and never
fails, so a notification can neither delay nor stop a job. Sending is retried a bounded number of times and
rate-limited per target; what is dropped is counted, never raised."""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config_model import NotifyTable
from .i18n import alarm_words, money, text

log = logging.getLogger("afn_agent.notify")

FAILED = ("failed", "interrupted")  # outcomes a member hears about as a failure
ALARMS = ("fault", "alarm", "emergency-stop", "power-unreachable")
QUEUE = 1000  # events waiting for the notifier; beyond, dropped and counted
Send = Callable[[str, str, str], bool]  # (target URL, title, body) -> delivered


@dataclass(frozen=True)
class Notice:
    """One message for one target."""

    target: str
    title: str
    body: str
    attempt: int = 0


def apprise_send(target: str, title: str, body: str) -> bool:
    """One message through Apprise; False when the target refused it or could not be reached."""
    import apprise

    sender = apprise.Apprise()
    if not sender.add(target):
        log.warning("not a notification URL Apprise knows: %s", _safe(target))
        return False
    return bool(sender.notify(body=body, title=title))


class Notifier:
    def __init__(
        self, settings: NotifyTable, reach: Callable[[str], tuple[list[str], str | None]],
        backlog: Callable[[], int], agent_id: str, send: Send = apprise_send,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.reach = reach  # member id -> (their targets, their language)
        self.backlog = backlog
        self.agent_id = agent_id
        self.send = send
        self.sent = self.failed = self.dropped = 0
        self.refused = 0  # members' targets of a kind they may not use (an internal webhook, a file)
        self._events: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue(QUEUE)
        self._retries: list[tuple[float, int, Notice]] = []
        self._seq = 0
        self._recent: dict[str, deque[float]] = {}
        self._jobs: dict[str, tuple[str | None, str]] = {}  # machine -> (member, job name): the thread's
        self._backlog_said = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)

    def start(self) -> Notifier:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def offer(self, machine_id: str, kind: str, payload: dict[str, Any]) -> None:
        """An event that may be worth a notification; never blocks, never raises."""
        try:
            self._events.put_nowait((machine_id, kind, dict(payload)))
        except queue.Full:
            self.dropped += 1

    def view(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "retrying": len(self._retries)}  # fmt: skip

    # ---- the notifier's thread --------------------------------------------------------------------
    def _run(self) -> None:
        next_backlog = 0.0
        while not self._stop.is_set():
            try:
                machine_id, kind, payload = self._events.get(timeout=0.2)
                for notice in self._notices(machine_id, kind, payload):
                    self._deliver(notice)
            except queue.Empty:
                pass
            except Exception:  # a bad event or a bug here must not end notifications for good
                log.exception("notification for an event failed")
            now = time.monotonic()
            while self._retries and self._retries[0][0] <= now:
                self._deliver(heapq.heappop(self._retries)[2])
            if now >= next_backlog:
                next_backlog = now + self.settings.backlog_check_s
                self._check_backlog()

    def _deliver(self, notice: Notice) -> None:
        if notice.attempt == 0 and not self._allowed(notice.target):
            self.dropped += 1
            log.warning("notification to %s dropped: over %d an hour", _safe(notice.target),
                        self.settings.per_target_per_hour)  # fmt: skip
            return
        try:
            ok = self.send(notice.target, notice.title, notice.body)
        except Exception as exc:  # a plugin's own failure is a failed delivery, nothing more
            log.warning("notification to %s raised %s", _safe(notice.target), exc)
            ok = False
        if ok:
            self.sent += 1
            return
        if notice.attempt < self.settings.retries:
            wait = self.settings.retry_s * 2**notice.attempt
            self._seq += 1
            retry = Notice(notice.target, notice.title, notice.body, notice.attempt + 1)
            heapq.heappush(self._retries, (time.monotonic() + wait, self._seq, retry))
        else:
            self.failed += 1
            tries = notice.attempt + 1
            log.warning("notification to %s failed %d times; given up", _safe(notice.target), tries)

    def _allowed(self, target: str) -> bool:
        """At most `per_target_per_hour` first attempts per target in any hour."""
        now = time.monotonic()
        recent = self._recent.setdefault(target, deque())
        while recent and now - recent[0] > 3600:
            recent.popleft()
        if len(recent) >= self.settings.per_target_per_hour:
            return False
        recent.append(now)
        return True

    # ---- what an event says, and to whom ----------------------------------------------------------
    def _notices(self, machine_id: str, kind: str, payload: dict[str, Any]) -> list[Notice]:
        if kind == "job-started":
            name = str(payload.get("name") or payload.get("job_id"))
            self._jobs[machine_id] = (payload.get("member_id"), name)
            return []
        if kind.startswith("job-") and (outcome := kind[4:]) in ("completed", *FAILED):
            member, name = self._jobs.pop(machine_id, (payload.get("member_id"), str(payload.get("job_id"))))
            member = payload.get("member_id") or member
            if outcome == "completed":
                return self._to_member(member, "notify.done", machine=machine_id, name=name,
                                       price=(payload.get("price"), payload.get("currency")))  # fmt: skip
            return self._to_member(member, "notify.failed", machine=machine_id, name=name,
                                   reason=payload.get("reason") or outcome)  # fmt: skip
        if kind == "prompt":
            member, name = self._jobs.get(machine_id, (None, ""))
            return self._to_member(member, "notify.waiting", machine=machine_id, name=name,
                                   text=payload.get("text") or payload.get("prompt_kind", ""))  # fmt: skip
        if kind in ALARMS:
            lang = self.settings.manager_language
            said = alarm_words(kind, payload)[lang]
            return self._to_managers("notify.alarm", machine=machine_id, alarm=said)
        return []

    def _to_member(self, member: str | None, key: str, **facts: Any) -> list[Notice]:
        if not member or not self.settings.members:
            return []
        targets, lang = self.reach(member)
        allowed = [t for t in targets if t.partition("://")[0].lower() in self.settings.member_schemes]
        for target in set(targets) - set(allowed):
            self.refused += 1
            log.warning("%s's target %s is not of a kind members may use ([notify] member_schemes)", member,
                        _safe(target))  # fmt: skip
        return [self._notice(t, key, lang or self.settings.language, **facts) for t in allowed]

    def _to_managers(self, key: str, **facts: Any) -> list[Notice]:
        lang = self.settings.manager_language
        return [self._notice(t, key, lang, **facts) for t in self.settings.managers]

    @staticmethod
    def _notice(target: str, key: str, lang: str, **facts: Any) -> Notice:
        if isinstance(price := facts.get("price"), tuple):
            facts["price"] = money(price[0], price[1], lang)
        return Notice(target, text(f"{key}.title", lang, **facts), text(f"{key}.body", lang, **facts))

    def _check_backlog(self) -> None:
        """Managers hear once when undelivered usage records pass the threshold, again only after the
        backlog has fallen below half of it."""
        try:
            count = self.backlog()
        except Exception as exc:  # the ledger busy or failing: the next check will tell
            log.debug("backlog check skipped: %s", exc)
            return
        limit = self.settings.backlog_records
        if count >= limit and not self._backlog_said:
            self._backlog_said = True
            for notice in self._to_managers("notify.backlog", count=count, agent=self.agent_id):
                self._deliver(notice)
        elif count < limit / 2:
            self._backlog_said = False


def _safe(target: str) -> str:
    """A target as it may be logged: its scheme and host, never the credentials or tokens in it."""
    scheme, _, rest = target.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].split("?", 1)[0]
    return f"{scheme}://{host}/…"
