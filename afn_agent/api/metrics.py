"""Prometheus metrics, read from the agent at scrape time (nothing in the hot path counts for them).

Per machine, never per member: a member's activity is in the ledger, where access is controlled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..ledger.usage import parse_iso, utc_now
from ..machine.events import MachineState

if TYPE_CHECKING:
    from ..agent import Agent

TOTALS = (  # (metric, help, JSON path in the usage record)
    ("afn_job_active_seconds", "Seconds jobs spent streaming (usage records).", "$.time_s.active_s"),
    ("afn_job_heating_seconds", "Seconds jobs spent waiting for heaters.", "$.time_s.heating_s"),
    ("afn_job_paused_seconds", "Seconds jobs spent paused.", "$.time_s.paused_s"),
    ("afn_job_waiting_seconds", "Seconds jobs spent waiting for a person.", "$.time_s.waiting_s"),
    ("afn_job_idle_seconds", "Seconds jobs spent starting.", "$.time_s.idle_s"),
    ("afn_material_grams", "Material used by jobs, grams.", "$.material_total.g"),
    ("afn_material_metres", "Filament pushed by jobs, metres.", "$.material_total.mm / 1000"),
    ("afn_laser_beam_seconds", "Laser beam-on seconds of jobs.", "$.beam_on_s"),
    ("afn_spindle_seconds", "Spindle-on seconds of jobs.", "$.spindle_on_s"),
)


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        state = GaugeMetricFamily(
            "afn_machine_state", "1 for the machine's current state.", labels=["machine", "state"]
        )
        progress = GaugeMetricFamily(
            "afn_job_progress_ratio", "Share of the running job acknowledged.", labels=["machine"]
        )
        temps = GaugeMetricFamily(
            "afn_temperature_celsius", "Heater temperatures.", labels=["machine", "heater", "kind"]
        )
        sent = CounterMetricFamily(
            "afn_serial_bytes_sent", "Bytes written to the machine.", labels=["machine"]
        )
        resends = CounterMetricFamily(
            "afn_resends", "Lines the firmware asked for again.", labels=["machine"]
        )
        errors = CounterMetricFamily(
            "afn_firmware_errors", "Errors the firmware reported.", labels=["machine"]
        )
        window = GaugeMetricFamily(
            "afn_window_bytes", "Bytes sent and not yet acknowledged.", labels=["machine"]
        )
        locked = GaugeMetricFamily(
            "afn_machine_locked", "1 when locked out for maintenance.", labels=["machine"]
        )
        for machine_id, m in agent.machines.items():
            snap = m.snapshot()
            for s in MachineState:
                state.add_metric([machine_id, s], 1.0 if m.state == s else 0.0)
            progress.add_metric([machine_id], snap["progress"])
            for heater, (actual, target) in snap["temperatures"].items():
                temps.add_metric([machine_id, heater, "actual"], actual)
                temps.add_metric([machine_id, heater, "target"], target)
            sent.add_metric([machine_id], snap["bytes_sent"])
            resends.add_metric([machine_id], snap["resends"])
            errors.add_metric([machine_id], snap["errors"])
            window.add_metric([machine_id], snap["window_bytes"])
            row = agent.ledger.machine(machine_id) or {}
            locked.add_metric([machine_id], 1.0 if row.get("locked") else 0.0)
        yield from (state, progress, temps, sent, resends, errors, window, locked)
        yield from self._ledger_totals()
        outbox = GaugeMetricFamily("afn_outbox_pending", "Outbox rows not yet delivered.")
        outbox.add_metric([], agent.ledger.outbox_pending())
        undelivered = GaugeMetricFamily(
            "afn_usage_undelivered", "Usage records not acknowledged by the booking system."
        )
        awaited = agent.config.booking.mode != "none"  # a lab without a booking system awaits nobody
        undelivered.add_metric([], agent.ledger.undelivered() if awaited else 0)
        mqtt = GaugeMetricFamily("afn_mqtt_connected", "1 when connected to the broker (absent: no broker).")
        restarts = CounterMetricFamily(
            "afn_mqtt_network_restarts", "Times the MQTT network loop failed and was rebuilt."
        )
        if agent.bus is not None:
            mqtt.add_metric([], 1.0 if agent.bus.up else 0.0)
            restarts.add_metric([], agent.bus.network_restarts)
        yield from (outbox, undelivered, mqtt, restarts)
        yield from self._directory()
        yield from self._power()

    def _directory(self) -> Iterator[Metric]:
        """Whether the member directory's pulls succeed, and how old the cached directory is."""
        access = self.agent.access
        if access is None or access.sync_status.source is None:
            return
        status = access.sync_status
        ok = GaugeMetricFamily("afn_directory_sync_ok", "1 when the last pull of the directory succeeded.",
                               labels=["source"])  # fmt: skip
        ok.add_metric([status.source or ""], 1.0 if status.ok else 0.0)
        failures = GaugeMetricFamily("afn_directory_sync_failures", "Directory pulls failed in a row.")
        failures.add_metric([], status.failures)
        age = GaugeMetricFamily("afn_directory_age_seconds", "Seconds since the cached directory was synced.")
        meta = access.directory.meta()
        if meta is not None:
            age.add_metric([], (utc_now() - parse_iso(meta["synced_at"])).total_seconds())
        yield from (ok, failures, age)

    def _power(self) -> Iterator[Metric]:
        """Machines whose power the agent switches: relay state, watts drawn, whether the switch answers."""
        on = GaugeMetricFamily("afn_power_on", "1 when the machine's power relay is on.", labels=["machine"])
        watts = GaugeMetricFamily("afn_power_watts", "Power drawn, as its plug measures.", labels=["machine"])
        reachable = GaugeMetricFamily(
            "afn_power_switch_reachable", "1 when the machine's power switch answers.", labels=["machine"]
        )
        for machine_id, plug in list(self.agent.plugs.items()):  # a reload may replace one meanwhile
            if plug.on is not None:
                on.add_metric([machine_id], 1.0 if plug.on else 0.0)
            if plug.watts is not None:
                watts.add_metric([machine_id], plug.watts)
            reachable.add_metric([machine_id], 1.0 if plug.reachable else 0.0)
        yield from (on, watts, reachable)

    def _ledger_totals(self) -> Iterator[Metric]:
        conn = self.agent.ledger.conn
        jobs = CounterMetricFamily("afn_jobs", "Jobs ended, by outcome.", labels=["machine", "outcome"])
        for machine_id, outcome, n in conn.execute(
            "SELECT machine_id, json_extract(record_json, '$.job.outcome'), COUNT(*) "
            "FROM usage_records GROUP BY 1, 2"
        ):
            jobs.add_metric([machine_id, outcome], n)
        yield jobs
        sums = ", ".join(_total(path) for _, _, path in TOTALS)
        rows = {
            r[0]: r[1:]
            for r in conn.execute(f"SELECT machine_id, {sums} FROM usage_records GROUP BY machine_id")
        }
        for i, (name, doc, _) in enumerate(TOTALS):
            family = CounterMetricFamily(name, doc, labels=["machine"])
            for machine_id in self.agent.machines:
                family.add_metric([machine_id], rows.get(machine_id, (0.0,) * len(TOTALS))[i])
            yield family


def _total(path: str) -> str:
    """SQL summing a record field; `path / 1000` converts mm to the base unit Prometheus wants."""
    field, _, divisor = path.partition(" / ")
    expr = f"TOTAL(json_extract(record_json, '{field}'))"
    return f"{expr} / {divisor}" if divisor else expr


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry
