"""Prometheus metrics, in one place (`dee.ops.http` serves them).

Metrics live in a registry per `Metrics` object rather than the global default registry, so
two engines in one process (tests do that) never collide.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick_duration = Histogram("dee_tick_duration_seconds", "Duration of one tick iteration", ["partition"], registry=r,
                                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))  # fmt: skip
        self.tick_lag = Gauge("dee_tick_lag_ticks", "Clock tick minus the last processed tick", ["partition"], registry=r)
        self.runs_processed = Counter("dee_runs_processed_total", "Runs advanced by the kernel", ["partition"], registry=r)
        self.steps = Counter("dee_step_transitions_total", "Runs entering a plan node", ["partition"], registry=r)
        self.audit_entries = Counter("dee_audit_entries_total", "Audit entries written", ["partition"], registry=r)
        self.inbound = Counter("dee_inbound_messages_total", "Stream messages accepted", ["partition"], registry=r)
        self.dead_letters = Counter("dee_dead_letters_total", "Messages moved to a dead-letter stream", ["partition"], registry=r)
        self.dispatch_latency = Histogram("dee_dispatch_latency_seconds", "Channel adapter call latency",
                                          ["channel", "adapter"], registry=r,
                                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))  # fmt: skip
        # result: "delivered", or the error kind of a failure (transient, rate_limited, ...)
        self.dispatch_results = Counter("dee_dispatch_results_total", "Channel results", ["channel", "adapter", "result"], registry=r)
        self.dispatch_in_flight = Gauge("dee_dispatch_in_flight", "Channel actions handed to an adapter, not yet answered",
                                        ["channel", "adapter"], registry=r)  # fmt: skip
        # limit: daily_limit, domain_rate, warmup or budget (`dee.limits`); a refused action is not sent
        self.dispatch_limited = Counter("dee_dispatch_limited_total", "Channel actions a deliverability limit or budget refused",
                                        ["channel", "limit"], registry=r)  # fmt: skip
        self.partitions_owned = Gauge("dee_partitions_owned", "Partitions this process owns", registry=r)
        self.lease_losses = Counter("dee_lease_losses_total", "Leases lost (fenced out)", registry=r)
        self.runs_by_status = Gauge("dee_runs", "Runs by status (sampled)", ["status"], registry=r)
        self.policy_denials = Counter("dee_policy_denials_total", "Sends a policy gate did not allow, by gate and verdict",
                                      ["gate", "verdict"], registry=r)  # fmt: skip
        # the ingress: requests by route and status, and the events they became
        self.ingress_requests = Counter("dee_ingress_requests_total", "HTTP ingress requests answered", ["route", "status"],
                                        registry=r)  # fmt: skip
        self.ingress_events = Counter("dee_ingress_events_total", "Events the ingress had accepted", ["type"], registry=r)
        self.ingress_refused_connections = Counter("dee_ingress_refused_connections_total",
                                                   "Connections closed at once: the cap was reached", registry=r)  # fmt: skip

    def observe_tick(self, partition: int, report: Any, seconds: float) -> None:
        p = str(partition)
        self.tick_duration.labels(p).observe(seconds)
        self.runs_processed.labels(p).inc(report.processed)
        self.steps.labels(p).inc(report.transitions)
        self.audit_entries.labels(p).inc(report.entries)
        self.inbound.labels(p).inc(report.accepted)
        self.dead_letters.labels(p).inc(report.dead)
        for (gate, verdict), count in report.denials.items():
            self.policy_denials.labels(gate, verdict).inc(count)

    def observe_dispatch(self, channel: str, adapter: str, result: str, seconds: float) -> None:
        self.dispatch_latency.labels(channel, adapter).observe(seconds)
        self.dispatch_results.labels(channel, adapter, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
