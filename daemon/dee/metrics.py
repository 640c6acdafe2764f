"""Prometheus metrics, in one place (`dee.ops.http` serves them).

Metrics live in a registry per `Metrics` object rather than the global default registry, so
two engines in one process (tests do that) never collide. Names are in base units (`_seconds`,
`_messages`), counters end in `_total`, and every label has a bounded set of values: partitions,
statuses, channels, adapters, gates and step types are fixed by the deployment and its
plugins; plan-defined step outcomes are cut to their class and capped per step type
(`outcome_label`). No label ever names a run or a contact.

Gauges that describe a partition (`dee_tick_lag_seconds`, `dee_runs`,
`dee_inbound_backlog_messages`) are exported only by the daemon that owns the partition, so a
sum over daemons counts each once.
"""

from __future__ import annotations

import importlib.metadata
import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# distinct outcome classes shown per step type; a plan's further ones are counted as "other"
OUTCOMES_PER_STEP_TYPE = 16
OTHER = "other"
# `source` of a dead letter: an inbound entry that is no valid message or cannot be stored, a
# message read and refused (a command its run refused), a dispatch entry that is no channel action
DEAD_LETTER_SOURCES = ("inbound", "refused", "dispatch")

_TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_DISPATCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def build_version() -> str:
    """The installed distribution's version (`unknown` when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("dee")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (CPU, memory, file descriptors), python_info and python_gc_*, as the default registry has them
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge("dee_build_info", "Always 1: the running release and Python", ["version", "python"], registry=r)
        self.build_info.labels(build_version(), platform.python_version()).set(1)

        # ---- partition workers
        self.tick_duration = Histogram("dee_tick_duration_seconds", "Duration of one partition worker iteration",
                                       ["partition"], registry=r, buckets=_TICK_BUCKETS)  # fmt: skip
        self.tick_lag = Gauge("dee_tick_lag_seconds", "How far the partition's last processed tick is behind the clock",
                              ["partition"], registry=r)  # fmt: skip
        self.runs_processed = Counter("dee_runs_processed_total", "Runs advanced by the kernel", ["partition"], registry=r)
        self.step_transitions = Counter("dee_step_transitions_total", "Runs entering a plan step", ["partition"], registry=r)
        self.steps = Counter("dee_steps_total", "Step executions that ended, by step type and outcome class",
                             ["type", "outcome"], registry=r)  # fmt: skip
        self.runs_by_status = Gauge("dee_runs", "Runs by status, in the partitions this process owns",
                                    ["partition", "status"], registry=r)  # fmt: skip
        self.audit_entries = Counter("dee_audit_entries_total", "Audit entries written", ["partition"], registry=r)
        self.inbound = Counter("dee_inbound_messages_total", "Stream messages accepted", ["partition"], registry=r)
        self.inbound_backlog = Gauge("dee_inbound_backlog_messages",
                                     "Entries of the partition's stream not yet read or not yet acknowledged (sampled)",
                                     ["partition"], registry=r)  # fmt: skip
        self.dead_letters = Counter("dee_dead_letters_total", "Messages moved to a dead-letter stream",
                                    ["partition", "source"], registry=r)  # fmt: skip
        self.policy_denials = Counter("dee_policy_denials_total", "Gate verdicts other than allow (defer, skip, pause, fail)",
                                      ["gate", "verdict"], registry=r)  # fmt: skip
        self.policy_verdicts = Counter("dee_policy_verdicts_total", "Sends the gates were asked about, by the verdict that stood",
                                       ["verdict"], registry=r)  # fmt: skip

        # ---- dispatchers
        self.dispatch_latency = Histogram("dee_dispatch_latency_seconds", "Channel adapter call latency",
                                          ["channel", "adapter"], registry=r, buckets=_DISPATCH_BUCKETS)  # fmt: skip
        # result: "delivered", or the error kind of a failure (transient, rate_limited, ...)
        self.dispatch_results = Counter("dee_dispatch_results_total", "Channel results", ["channel", "adapter", "result"], registry=r)
        self.dispatch_in_flight = Gauge("dee_dispatch_in_flight", "Channel actions handed to an adapter, not yet answered",
                                        ["channel", "adapter"], registry=r)  # fmt: skip
        # limit: daily_limit, domain_rate, warmup or budget (`dee.limits`); a refused action is not sent
        self.dispatch_limited = Counter("dee_dispatch_limited_total", "Channel actions a deliverability limit or budget refused",
                                        ["channel", "limit"], registry=r)  # fmt: skip
        self.dispatch_backlog = Gauge("dee_dispatch_backlog_messages",
                                      "Entries of a dispatch stream not yet read or not yet acknowledged (sampled; "
                                      "every daemon sees the same stream)", ["channel"], registry=r)  # fmt: skip

        # ---- coordinator
        self.partitions_owned = Gauge("dee_partitions_owned", "Partitions this process owns", registry=r)
        self.lease_losses = Counter("dee_lease_losses_total", "Leases lost (fenced out or not renewed in time)", registry=r)

        # ---- the ingress: requests by route and status, and the events they became
        self.ingress_requests = Counter("dee_ingress_requests_total", "HTTP ingress requests answered", ["route", "status"],
                                        registry=r)  # fmt: skip
        self.ingress_events = Counter("dee_ingress_events_total", "Events the ingress had accepted", ["type"], registry=r)
        self.ingress_refused_connections = Counter("dee_ingress_refused_connections_total",
                                                   "Connections closed at once: the cap was reached", registry=r)  # fmt: skip
        self._outcomes: dict[str, set[str]] = {}  # step type -> the outcome classes shown for it

    def outcome_label(self, step_type: str, outcome: str) -> str:
        """A step outcome as a label: its class (`branch:warm-follow-up` -> `branch`), and
        `other` past `OUTCOMES_PER_STEP_TYPE` classes of one type (an end step's outcome is
        whatever plans name), so no plan can grow the series without bound."""
        label = outcome.split(":", 1)[0]
        shown = self._outcomes.setdefault(step_type, set())
        if label not in shown:
            if len(shown) >= OUTCOMES_PER_STEP_TYPE:
                return OTHER
            shown.add(label)
        return label

    def observe_dispatch(self, channel: str, adapter: str, result: str, seconds: float) -> None:
        self.dispatch_latency.labels(channel, adapter).observe(seconds)
        self.dispatch_results.labels(channel, adapter, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
