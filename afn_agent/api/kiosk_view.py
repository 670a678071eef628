"""What the console beside a machine shows, in the member's language: every sentence from the catalogues
(i18n.py), money, durations and clock times formatted for the locale here, so the page only places them.

The view is a plain dict rebuilt for each change (the SSE stream sends it when it differs).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import i18n
from ..ledger.snapshots import Snapshots
from ..ledger.usage import parse_iso, utc_now
from ..machine.events import MachineState
from .auth import Authenticator
from .native import job_view

if TYPE_CHECKING:
    from ..agent import Agent

DECISION_SHOWN_S = 60
HEATERS = {"T": "ui.nozzle", "T0": "ui.nozzle", "B": "ui.bed"}


def language(agent: Agent, machine_id: str, asked: str | None) -> str:
    """The member's choice when they made one, else the machine's configured language."""
    if asked in i18n.LANGUAGES:
        return str(asked)
    m = agent.config.find(machine_id)
    return m.console.language if m else "fr"


def kiosk_view(agent: Agent, auth: Authenticator, machine_id: str, with_token: bool,
               lang: str = "fr") -> dict[str, Any]:  # fmt: skip
    status = agent.control.status(machine_id)
    machine = agent.machines[machine_id]
    kind = machine.profile.kind
    session = status.get("session")
    member = session["member_id"] if session else None
    jobs = agent.ledger.jobs(machine_id, ("held", "queued")) if member else []
    waiting = [j for j in jobs if j["member_id"] == member]
    unclaimed = [j for j in jobs if j["member_id"] is None and j["state"] == "held" and j["source"] != "cli"]
    badges = [r for r in agent.ledger.audit_log(machine_id, 50) if r["action"] == "badge"]  # newest first
    decision = _last_decision(badges, lang)
    view: dict[str, Any] = {
        "machine": machine_id,
        "kind": kind,
        "lang": lang,
        "other_lang": "en" if lang == "fr" else "fr",
        "text": i18n.texts(lang, "ui.", "prompt."),
        "state": status["state"],
        "state_text": _state_text(status, machine.heating, kind, lang),
        "locked": status["locked"],
        "needs_confirmation": status["needs_confirmation"],
        "alarms": [{**a, "words": (a.get("text") or {}).get(lang, "")} for a in status["alarms"]],
        "material": status["material"],
        "materials": sorted(agent.config.materials),
        "session": _session(session, lang),
        "decision": decision,
        "queue": [_job(agent, j, lang) for j in waiting],
        "unclaimed": [_job(agent, j, lang) for j in unclaimed],
        "temperatures": _temperatures(machine.temperatures, machine.heat_eta_s, lang),
        "position": _work_position(machine.position, machine.work_offset),
        "work_offset": status.get("work_offset"),
        "grbl_state": machine.grbl_state,
        "prompt": _prompt(status.get("prompt"), lang),
        "probe": _probe(machine.last_probe, lang),
        "jog_steps": list(agent.config.machine(machine_id).console.jog_steps),
        "homes": kind == "printer" or machine.driver.travel_known,
        "running": _running(agent, machine_id, status, kind, lang),
        "summary": _summary(agent, machine_id, _last_opened(badges), lang),
    }
    access = agent.access
    if with_token and session is not None and access and (raw := access.sessions.current(machine_id)):
        view["token"] = auth.token_for_session(machine_id, raw)
    return view


def _state_text(status: dict[str, Any], heating: bool, kind: str, lang: str) -> str:
    state = status["state"]
    if status["locked"]:
        return i18n.text("state.locked", lang)
    if state == MachineState.PRINTING:
        return i18n.text("state.heating" if heating else f"state.printing.{kind}", lang)
    return i18n.text(f"state.{state}", lang)


def _session(session: dict[str, Any] | None, lang: str) -> dict[str, Any] | None:
    if session is None:
        return None
    until = session.get("allowed_until")
    until_text = i18n.text("ui.until", lang, time=i18n.clock(parse_iso(until), lang)) if until else ""
    held = i18n.text("ui.held-by", lang, name=session.get("member_name") or "")
    return {**session, "held_text": held, "until_text": until_text}


def _temperatures(temps: Any, etas: Any, lang: str) -> list[dict[str, Any]]:
    out = []
    for name, (actual, target) in sorted(temps.items()):
        if name not in HEATERS or (name == "T0" and "T" in temps):
            continue
        eta = etas.get(name)
        out.append({"name": name, "label": i18n.text(HEATERS[name], lang), "actual": actual, "target": target,
                    "text": i18n.text("fmt.temp", lang, actual=actual, target=target),
                    "eta_text": i18n.text("ui.at-temperature-in", lang, time=i18n.duration(eta, lang))
                    if eta else ""})  # fmt: skip
    return out


def _work_position(position: Any, offset: Any) -> dict[str, str]:
    return {axis: f"{v - offset.get(axis, 0.0):.3f}" for axis, v in sorted(position.items()) if axis in "XYZ"}


def _prompt(prompt: dict[str, Any] | None, lang: str) -> dict[str, Any] | None:
    if prompt is None:
        return None
    title = i18n.text(f"prompt.{prompt['kind']}", lang, tool=prompt.get("tool") or "")
    return {**prompt, "title": title}


def _probe(probe: dict[str, Any] | None, lang: str) -> dict[str, Any] | None:
    if probe is None:
        return None
    key = "ui.probe-result" if probe["touched"] else "ui.probe-failed"
    return {**probe, "text": i18n.text(key, lang, plate=f"{probe['plate_mm']:g}")}


def _job(agent: Agent, job: dict[str, Any], lang: str) -> dict[str, Any]:
    out = job_view(job, agent.config.spool_dir)
    quote = out.get("quote") or {}
    out["estimate_text"] = i18n.duration(out.get("estimate_s"), lang)
    out["price_text"] = i18n.money(quote.get("price"), quote.get("currency"), lang)
    out["grams_text"] = i18n.text("fmt.grams", lang, g=out.get("material_g") or 0.0)
    return out


def _running(
    agent: Agent, machine_id: str, status: dict[str, Any], kind: str, lang: str
) -> dict[str, Any] | None:
    running = agent.control.running_job(machine_id)
    if running is None:
        return None
    figures = agent.control.job_figures(machine_id) or {}
    estimate = json.loads(running["estimate_json"] or "{}")
    job = status["job"] or {}
    machine = agent.machines[machine_id]
    eta = job.get("eta_s")
    if machine.heating and eta is not None:  # held by a heat-and-wait: the ETA counts the heating down too
        eta += max((s for s in machine.heat_eta_s.values() if s), default=0.0)
    out = {
        **_job(agent, running, lang),
        "progress": job.get("progress", 0.0),
        "progress_text": f"{job.get('progress', 0.0) * 100:.0f} %",
        "eta_text": i18n.duration(eta, lang),
        "elapsed_text": i18n.duration(figures.get("total_s"), lang),
        "price_text": i18n.money(figures.get("price_so_far"), figures.get("currency"), lang),
        "material_text": i18n.text("fmt.grams", lang, g=figures.get("material_g", 0.0)),
        "heating": machine.heating,
    }
    so_far = {"laser": "beam_on_s", "mill": "spindle_on_s"}.get(kind)
    if so_far:
        done, planned = i18n.duration(figures.get(so_far), lang), i18n.duration(estimate.get(so_far), lang)
        out["machine_time_text"] = i18n.text("ui.of-estimate", lang, done=done, estimate=planned)
        out["machine_time_label"] = i18n.text("ui.beam-time" if kind == "laser" else "ui.spindle-time", lang)
    return out


def _summary(agent: Agent, machine_id: str, badge_at: str | None, lang: str) -> dict[str, Any] | None:
    """The last job that ended here, until the next badge: time, material or beam/spindle, price, outcome."""
    job = agent.ledger.last_ended(machine_id)
    if job is None:
        return None
    if badge_at and job["ended_at"] < badge_at:
        return None  # someone badged since: the summary was theirs to see
    record = agent.ledger.record_of(job["id"]) or {}
    kind = agent.machines[machine_id].profile.kind
    grams = (record.get("material_total") or {}).get("g", 0.0)
    out = {
        "id": job["id"], "name": job["name"], "outcome": job["state"],
        "outcome_text": i18n.text(f"outcome.{job['state']}", lang),
        "time_text": i18n.duration((record.get("time_s") or {}).get("total_s"), lang),
        "price_text": i18n.money(record.get("price"), record.get("currency"), lang),
        "material_text": i18n.text("fmt.grams", lang, g=grams) if kind == "printer" else "",
        "thumbnail": job_view(job)["thumbnail"],
        "picture": _picture(agent, job["id"]),
    }  # fmt: skip
    if kind in ("laser", "mill"):
        seconds = record.get("beam_on_s" if kind == "laser" else "spindle_on_s")
        out["machine_time_label"] = i18n.text("ui.beam-time" if kind == "laser" else "ui.spindle-time", lang)
        out["machine_time_text"] = i18n.duration(seconds, lang)
    return out


def _picture(agent: Agent, job_id: str) -> str | None:
    """The camera's last picture of the job still kept (its end, else the latest), as a URL."""
    rows = Snapshots(agent.ledger).of_job(job_id)
    kept = [p for p in rows if p["removed_at"] is None and p["path"].endswith(".jpg")]
    ends = [p for p in kept if p["moment"] == "end"] or kept
    return f"/v1/snapshots/{ends[-1]['id']}" if ends else None


def _last_opened(badges: list[dict[str, Any]]) -> str | None:
    """When the last session opened at the machine (badge rows, newest first)."""
    for row in badges:
        if json.loads(row["detail_json"]).get("action") == "opened":
            return str(row["at"])
    return None


def _last_decision(badges: list[dict[str, Any]], lang: str) -> dict[str, Any] | None:
    """The newest badge decision, in words, for its first minute on the screen."""
    if not badges or (utc_now() - parse_iso(badges[0]["at"])).total_seconds() > DECISION_SHOWN_S:
        return None
    row = badges[0]
    detail = json.loads(row["detail_json"])
    code = "badge-out" if detail.get("action") == "badge-out" else row["result"]
    key = f"decision.{code}" if f"decision.{code}" in i18n.CATALOGUE else "decision.other"
    name = detail.get("member_name") or ""
    return {
        "code": row["result"],
        "action": detail.get("action"),
        "member_name": detail.get("member_name"),
        "text": i18n.text(key, lang, name=name, detail=detail.get("detail") or code),
        "at": row["at"],
    }
