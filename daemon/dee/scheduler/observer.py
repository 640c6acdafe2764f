"""What a partition worker tells the metrics, kept out of the worker's own logic.

The partition's series are bound once (an iteration then costs no label lookup for them) and
every counter is exported at 0 from the start, so an alert on its increase sees the first
one. Gauges that describe the partition (tick lag, runs by status, inbound backlog) are read
when scraped, and removed when the worker stops: the partition's next owner exports them, and
a sum over daemons counts each partition once. Without metrics every call is a no-op.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from dee.metrics import Metrics
from dee.scheduler.clock import DeploymentClock
from dee.scheduler.runcounts import STATUSES, Census, RunCounts

if TYPE_CHECKING:
    from dee.scheduler.worker import TickReport


class WorkerObserver:
    def __init__(self, metrics: Metrics | None, partition: int, clock: DeploymentClock, census: Census | None) -> None:
        self.m = metrics
        self.p = p = str(partition)
        self.clock = clock
        self.census = census if metrics is not None else None
        self.counts = RunCounts(partition, self._export_counts) if self.census is not None else None
        # the tick the lag is measured from: the last one processed (the clock's at the start)
        self.processed_tick = clock.wall_tick() if clock.mode == "wall" else -1
        if metrics is None:
            return
        self.tick_duration = metrics.tick_duration.labels(p)
        self.runs_processed = metrics.runs_processed.labels(p)
        self.step_transitions = metrics.step_transitions.labels(p)
        self.audit_entries = metrics.audit_entries.labels(p)
        self.inbound = metrics.inbound.labels(p)
        self.dead_inbound = metrics.dead_letters.labels(p, "inbound")
        self.dead_refused = metrics.dead_letters.labels(p, "refused")

    def started(self) -> None:
        if self.m is not None:
            self.m.tick_lag.labels(self.p).set_function(self.lag_seconds)

    def stopped(self) -> None:
        """The partition is no longer this worker's: its gauges go, its counters stay."""
        if self.counts is not None:
            self.counts.closed = True
        if self.m is None:
            return
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.m.tick_lag, (self.p,)), (self.m.inbound_backlog, (self.p,))]
        series += [(self.m.runs_by_status, (self.p, status)) for status in STATUSES]
        for gauge, labels in series:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass  # never exported (older prometheus_client raises for those)

    def lag_seconds(self) -> float:
        """How far the last processed tick is behind the clock, in seconds, when asked: a
        worker stuck in an iteration or an outage falls behind. 0 under a manual clock, which
        moves only when told and wakes every partition when it does."""
        if self.clock.mode != "wall":
            return 0.0
        return max(0, self.clock.wall_tick() - self.processed_tick) * self.clock.interval / 1000

    async def before_iteration(self) -> None:
        """When the partition's runs are due to be counted, wait for the snapshot that counts
        them: the iteration's commit then comes after it."""
        if self.census is not None and self.counts is not None and self.counts.due():
            await self.census.snapshot(self.counts)

    def processed(self, tick: int) -> None:
        self.processed_tick = max(self.processed_tick, tick)

    def committed(self, report: TickReport) -> None:
        """Right after a commit, before anything that may fail: its status moves join the
        partition's run counts."""
        if self.counts is not None and report.tally.moves:
            self.counts.moved(report.tally.moves)

    def iteration(self, report: TickReport, seconds: float) -> None:
        m = self.m
        if m is None:
            return
        self.tick_duration.observe(seconds)
        self.runs_processed.inc(report.processed)
        self.audit_entries.inc(report.entries)
        self.inbound.inc(report.accepted)
        tally = report.tally
        self.step_transitions.inc(tally.transitions)
        for (step_type, outcome), count in tally.steps.items():
            m.steps.labels(step_type, m.outcome_label(step_type, outcome)).inc(count)
        for (gate, verdict), count in tally.denials.items():
            m.policy_denials.labels(gate, verdict).inc(count)
        for verdict, count in tally.verdicts.items():
            m.policy_verdicts.labels(verdict).inc(count)

    def dead_letters(self, source: str, count: int) -> None:
        """Dead letters written (counted where they are, whatever becomes of the iteration)."""
        if self.m is not None and count:
            (self.dead_inbound if source == "inbound" else self.dead_refused).inc(count)

    def _export_counts(self) -> None:
        if self.m is not None and self.counts is not None:
            for status in STATUSES:
                self.m.runs_by_status.labels(self.p, status).set_function(partial(self.counts.value, status))
