"""When a machine is powered: a pure function of what is happening at it, per kind of machine.

Powered only during an allowed session or a job; never cut mid-job; a printer stays on until its hotend
is below a safe temperature (its firmware runs the hotend fan only while it has power); a laser's
extraction and chiller run on for `after_s` after the job."""

from __future__ import annotations

from dataclasses import dataclass

COOL_UNKNOWN_S = 900.0  # a printer whose temperature cannot be read stays on this long after use


@dataclass(frozen=True)
class Facts:
    kind: str  # printer | laser | mill | other (the profile's)
    job: bool  # a job runs on it
    session: bool  # a member's session is open at it
    waiting: bool  # a job waits in its queue (it needs the machine up to start)
    since_use_s: float  # since the last job or session ended (inf: not used since the agent started)
    powered: bool  # its relay is on now
    hottest_c: float | None = None  # the hottest hotend it reports (None: not read)


@dataclass(frozen=True)
class Rule:
    after_s: float = 0.0  # power (or the extraction, when it has its own switch) stays on this long
    cool_c: float = 50.0  # a printer stays on until every hotend is below this
    own_extraction: bool = False  # a separate switch for extraction and chiller


@dataclass(frozen=True)
class Decision:
    power: bool
    extraction: bool
    reason: str


def decide(f: Facts, rule: Rule) -> Decision:
    """What the machine's power and extraction should be now, and why (for the audit log)."""
    if f.job:
        return Decision(True, True, "a job is running")
    if f.session:
        return Decision(True, True, "a member's session is open")
    if f.waiting:
        return Decision(True, True, "a job is waiting to start")
    after = f.since_use_s < rule.after_s
    if f.kind == "printer" and f.powered:
        if f.hottest_c is None and f.since_use_s < max(rule.after_s, COOL_UNKNOWN_S):
            return Decision(True, after, "cooling down (hotend temperature not read)")
        if f.hottest_c is not None and f.hottest_c >= rule.cool_c:
            return Decision(
                True, after, f"cooling down: hotend {f.hottest_c:.0f} °C, off below {rule.cool_c:g} °C"
            )
    if after:
        why = f"extraction runs {rule.after_s:g} s after use"
        return Decision(not rule.own_extraction, True, why)
    return Decision(False, False, "no session and no job")
