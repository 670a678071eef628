"""What a dashboard shows of the fleet's state, per audience: member ids and names only to a signed-in
manager (the page itself is open to the lab's network), and events as sentences from the catalogues."""

from __future__ import annotations

from typing import Any

from .. import i18n

_ALARMS = ("fault", "alarm", "link-lost", "door-open", "stall", "power-unreachable")
_ENDED = ("completed", "cancelled", "failed", "interrupted")


def machine_view(status: dict[str, Any], manager: bool, names: dict[str, str]) -> dict[str, Any]:
    """A machine's status for this audience: without a manager, who uses it is only 'in use'; for a
    manager, the job's member by name when an agent said it."""
    out = {**status, "yours": manager}  # yours: this audience may steer it
    job = out.get("job")
    if manager:
        if isinstance(job, dict) and isinstance(member := job.get("member_id"), str) and member in names:
            out["job"] = {**job, "member_name": names[member]}
        return out
    if out.get("session"):
        out["session"] = {"in_use": True}
    if isinstance(out.get("job"), dict):
        out["job"] = {**out["job"], "member_id": None}
    return out


def event_view(event: dict[str, Any], names: dict[str, str], manager: bool) -> dict[str, Any]:
    """An event as the dashboard lists it: when, where, what kind, and its sentence in each language
    (names for managers; 'a member' otherwise). Its raw facts stay with managers."""
    view: dict[str, Any] = {
        "machine": event.get("machine"), "key": event.get("key") or event.get("machine"),
        "lab": event.get("lab"), "type": event.get("type"), "t": event.get("t"),
        "tone": "alarm" if event.get("type") in _ALARMS else "info",
        "words": event_words(event, names, manager),
    }  # fmt: skip
    if manager and event.get("type") in ("appkey_requested", "appkey_decided"):
        view.update({k: event.get(k) for k in ("request", "app", "user") if k in event})
    if manager:
        view["facts"] = event
    return view


def _who(event: dict[str, Any], names: dict[str, str], manager: bool) -> dict[str, str]:
    """The member an event is about, in each language."""
    if not manager:
        return i18n.words("fleet.someone")
    member = event.get("member_id")
    name = event.get("member_name") or (names.get(member) if isinstance(member, str) else None)
    shown = str(name or member or "")
    return {lang: shown for lang in i18n.LANGUAGES} if shown else i18n.words("fleet.someone")


def event_words(event: dict[str, Any], names: dict[str, str], manager: bool) -> dict[str, str]:
    """The event's sentence in every language, from the most specific catalogue entry there is."""
    kind = str(event.get("type") or "")
    key, facts = _key_and_facts(kind, event)
    who = _who(event, names, manager)
    by = str(event.get("by") or event.get("actor") or "")[:60]  # staff, the agent or an application
    out = {}
    for lang in i18n.LANGUAGES:
        said = {k: (v[lang] if isinstance(v, dict) else v) for k, v in facts.items()}
        where = event.get("key") or event.get("machine")  # another lab's machine is named with its lab
        out[lang] = i18n.text(key, lang, machine=where, who=who[lang], by=by, **said)
    return out


def _key_and_facts(kind: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Which catalogue entry says this event, and the facts it needs (a fact may be {lang: words})."""
    detail = str(event.get("reason") or event.get("detail") or "")
    if kind == "badge":
        code = str(event.get("code") or "other")
        if code == "allowed":
            return ("event.badge.out" if event.get("action") == "badge-out" else "event.badge.allowed"), {}
        reason = f"reason.{code}" if f"reason.{code}" in i18n.CATALOGUE else "reason.other"
        return "event.badge.refused", {"reason": i18n.words(reason, detail=detail or code)}
    if kind in _ALARMS:
        return "event.alarm", {"alarm": i18n.alarm_words(kind, event)}
    if kind.startswith("job-") and kind[4:] in _ENDED:
        return f"event.job.{kind[4:]}", {"reason": detail}
    if kind == "job-started":
        return "event.job-started", {"job": str(event.get("name") or event.get("job_id") or "")}
    if kind == "lock":
        return ("event.lock-pending" if event.get("pending") else "event.lock"), {"reason": detail}
    if kind == "command":
        result = "done" if event.get("result") == "done" else "refused"
        words = i18n.words(f"fleet.action.{event.get('command')}") \
            if f"fleet.action.{event.get('command')}" in i18n.CATALOGUE else str(event.get("command"))
        return f"event.command.{result}", {"command": words, "code": str(event.get("code") or "")}
    if kind.startswith("reader-"):
        return "event.reader", {"state": kind[7:]}
    if kind == "material":
        return "event.material", {"material": str(event.get("name") or "")}
    if kind == "appkey_requested":
        return "event.appkey_requested", {"app": str(event.get("app") or "")[:80]}
    if kind == "appkey_decided":
        return "event.appkey_decided", {"decision": str(event.get("decision") or "")}
    if f"event.{kind}" in i18n.CATALOGUE:
        return f"event.{kind}", {"reason": detail}
    return "event.other", {"type": kind[:40]}
