"""Reloading the configuration of a running agent (SIGHUP, `systemctl reload`, `POST /v1/reload`): what
changes at once, what waits for a machine to be idle, what needs the agent restarted.

Adding an API key once meant a restart, and a restart killed the prints running then. Now keys, tariffs,
materials, access rules and machine settings change at once; a machine whose port, profile or interlock
changed gets a new thread when it has no job; what only a restart can change (site, broker, listening
address, the machines themselves, the badge secret) is reported and left as it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .config import AgentConfig, ApiConfig, MachineConfig
from .firmware.profile import ProfileError, load_profile

# the machine's threads (serial and power) hold these: changed when it is idle
THREAD_FIELDS = ("profile", "port", "baud", "wait_for_port", "interlock", "power", "extraction", "power_safe",
                 "power_poll_s")  # fmt: skip
RESTART_ONLY = ("site", "agent_id", "data_dir", "broker", "booking", "directory", "notify")
API_LISTEN = ("host", "port", "max_connections", "max_connections_per_client", "header_timeout_s",
              "body_timeout_s", "max_upload_mb", "octoprint_machine")  # fmt: skip


@dataclass
class Plan:
    """What a new configuration changes, sorted by when it can take effect."""

    config: AgentConfig  # the new one, with what needs a restart kept as it runs
    now: list[str] = field(default_factory=list)
    when_idle: dict[str, str] = field(default_factory=dict)  # machine id -> what its thread must take
    restart: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {"applied": self.now, "when_idle": self.when_idle, "needs_restart": self.restart}


def plan(old: AgentConfig, new: AgentConfig, profiles: dict[str, Any]) -> Plan:
    """Compare the running configuration with a freshly loaded one. `profiles` are the running machines'
    profiles (a profile file edited in place is a change too)."""
    kept: dict[str, Any] = {}
    tables = ("broker", "booking", "directory", "notify")
    restart = [f"[{name}]" if name in tables else f"[agent] {name}" for name in RESTART_ONLY
               if getattr(old, name) != getattr(new, name)]  # fmt: skip
    kept.update({name: getattr(old, name) for name in RESTART_ONLY})
    old_ids, new_ids = [m.id for m in old.machines], [m.id for m in new.machines]
    if old_ids != new_ids:
        restart.append(f"machines {', '.join(old_ids)} -> {', '.join(new_ids)} (added, removed or reordered)")
    machines, when_idle, now = [], {}, []
    for m in old.machines:
        fresh = new.find(m.id)
        if fresh is None:
            machines.append(m)
            continue
        machines.append(fresh)
        changed = [f.name for f in fields(MachineConfig) if getattr(m, f.name) != getattr(fresh, f.name)]
        thread = [n for n in changed if n in THREAD_FIELDS]
        if "profile" not in thread and _profile_changed(fresh, profiles.get(m.id)):
            thread.append("profile (its file changed)")
        if thread:
            when_idle[m.id] = ", ".join(thread)
        if live := [n for n in changed if n not in THREAD_FIELDS]:
            now.append(f"{m.id}: {', '.join(live)}")
    kept["machines"] = tuple(machines)
    kept["access"], access_note = _access(old, new)
    restart.extend(access_note)
    kept["api"], api_notes = _api(old.api, new.api)
    restart.extend(api_notes)
    for name, what in (("tariffs", "tariffs"), ("materials", "materials"), ("safety", "[safety]"),
                       ("spool", "spool settings"), ("checkpoint_s", "checkpoint_s")):  # fmt: skip
        if getattr(old, name) != getattr(new, name):
            now.append(what)
    if old.access != kept["access"]:
        now.append("[access] rules")
    if old.api is not None and kept["api"] is not None and old.api.keys != kept["api"].keys:
        now.append(f"API keys ({len(old.api.keys)} -> {len(kept['api'].keys)})")
    return Plan(replace(new, **kept), now, when_idle, restart)


def _profile_changed(m: MachineConfig, running: Any) -> bool:
    if running is None:
        return False
    try:
        return bool(load_profile(m.profile) != running)
    except ProfileError:
        return False  # load_config has read it already: a file changed in between is read at restart


def _access(old: AgentConfig, new: AgentConfig) -> tuple[Any, list[str]]:
    if (old.access is None) != (new.access is None):
        return old.access, ["[access] added or removed"]
    if old.access and new.access and old.access.badge_secret != new.access.badge_secret:
        kept = replace(new.access, badge_secret=old.access.badge_secret)  # every cached badge hash uses it
        return kept, ["[access] badge_secret"]
    return new.access, []


def _api(old: ApiConfig | None, new: ApiConfig | None) -> tuple[ApiConfig | None, list[str]]:
    if old is None or new is None:
        return old, ["[api] added or removed"] if (old is None) != (new is None) else []
    changed = [name for name in API_LISTEN if getattr(old, name) != getattr(new, name)]
    keep = {name: getattr(old, name) for name in API_LISTEN}
    return replace(new, **keep), [f"[api] {', '.join(changed)}"] if changed else []
