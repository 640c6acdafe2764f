"""The figures `dee bench` reports, the targets they are held to, and how they are printed."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from dee.ops.bench.workload import Expected

# The targets of the benchmark (2 cores, local PostgreSQL and Redis, durable commits).
TARGET_TRANSITIONS_PER_S = 25_000
TARGET_WRITE_EFFICIENCY = 0.5
TARGET_ENROLMENTS_PER_S = 30_000
TARGET_REPLAYS_PER_S = 5_000
TARGET_IDLE_GROWTH_MB = 50
TARGET_IDLE_TICK_MS = 10


@dataclass
class Correctness:
    """What the engine wrote, read back from Postgres."""

    runs: int
    terminal: int
    outcomes: Counter[str]
    paths: Counter[str]
    wrong_paths: int
    transitions: int
    sends: int
    audit_rows: int
    audit_bytes: int


@dataclass
class EngineFigures:
    daemons: int
    enrol_seconds: float
    seconds: float
    events: int
    transitions: int
    peak_rss_mb: float
    correctness: Correctness
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # enrolment and workload, by process group

    @property
    def transitions_per_s(self) -> float:
        return self.transitions / self.seconds

    @property
    def enrolments_per_s(self) -> float:
        return self.correctness.runs / self.enrol_seconds


@dataclass
class RawFigures:
    """COPY of as many audit-sized rows as the engine wrote, 500 runs per transaction."""

    rows: int
    row_bytes: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class ReplayFigures:
    runs: int
    identical: int
    chains_valid: int
    seconds: float

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds


@dataclass
class IdleFigures:
    runs: int
    small_runs: int
    enrol_seconds: float
    rss_small_mb: float
    rss_large_mb: float
    idle_tick_ms_small: float
    idle_tick_ms_large: float
    idle_ticks: int  # ticks averaged in each of the two measurements

    @property
    def growth_mb(self) -> float:
        return self.rss_large_mb - self.rss_small_mb


@dataclass
class BenchReport:
    contacts: int
    partitions: int
    cores: int
    expected: Expected
    log_dir: str
    engine: list[EngineFigures] = field(default_factory=list)
    raw: RawFigures | None = None
    replay: ReplayFigures | None = None
    idle: IdleFigures | None = None
    client_peak_rss_mb: float = 0.0

    def problems(self) -> list[str]:
        """Everything that differs from what a correct engine produces (empty: all correct)."""
        out = []
        want = self.expected
        for run in self.engine:
            got = run.correctness
            where = f"{run.daemons} daemon(s)"
            if got.runs != self.contacts or got.terminal != self.contacts:
                out.append(f"{where}: {got.terminal} of {got.runs} runs ended, {self.contacts} expected")
            if got.outcomes != want.outcomes:
                out.append(f"{where}: outcomes {dict(got.outcomes)}, expected {dict(want.outcomes)}")
            if got.paths != want.paths or got.wrong_paths:
                out.append(f"{where}: paths {dict(got.paths)} and {got.wrong_paths} wrong, expected {dict(want.paths)}")
            if got.transitions != want.transitions:
                out.append(f"{where}: {got.transitions} step transitions, expected {want.transitions}")
            if got.sends != want.sends:
                out.append(f"{where}: {got.sends} channel sends, expected {want.sends}")
        if self.replay is not None:
            completed = sum(want.outcomes.values())
            if self.replay.runs != completed or self.replay.identical != completed or self.replay.chains_valid != completed:
                out.append(f"replay: {self.replay.identical} identical and {self.replay.chains_valid} valid chains "
                           f"of {self.replay.runs} runs, {completed} expected")  # fmt: skip
        return out

    def summary(self) -> dict[str, object]:
        """The headline figures as one flat JSON object."""
        first = self.engine[0] if self.engine else None
        out: dict[str, object] = {"workload": "outreach-v2", "contacts": self.contacts, "partitions": self.partitions,
                                  "cores": self.cores, "correct": not self.problems(), "problems": self.problems()}  # fmt: skip
        if first is not None:
            out["transitions"] = first.transitions
            out["enrolments_per_s"] = round(first.enrolments_per_s)
            out["audit_rows"] = first.correctness.audit_rows
            out["audit_bytes_per_transition"] = round(first.correctness.audit_bytes / max(first.transitions, 1))
        for run in self.engine:
            out[f"transitions_per_s_{run.daemons}_daemon"] = round(run.transitions_per_s)
            out[f"seconds_{run.daemons}_daemon"] = round(run.seconds, 3)
            out[f"peak_rss_mb_{run.daemons}_daemon"] = round(run.peak_rss_mb, 1)
            for name, seconds in run.cpu_seconds.items():
                out[f"cpu_us_per_transition_{name}_{run.daemons}_daemon"] = round(1e6 * seconds / max(run.transitions, 1))
        if self.raw is not None and first is not None:
            out["raw_rows_per_s"] = round(self.raw.rows_per_s)
            out["raw_row_bytes"] = self.raw.row_bytes
            out["write_efficiency"] = round(self.raw.seconds / first.seconds, 3)
            out["transitions_per_raw_row_per_s"] = round(first.transitions_per_s / self.raw.rows_per_s, 3)
        if self.replay is not None:
            out.update(replay_runs=self.replay.runs, replay_identical=self.replay.identical,
                       chains_valid=self.replay.chains_valid, replays_per_s=round(self.replay.runs_per_s))  # fmt: skip
        if self.idle is not None:
            out.update(idle_runs=self.idle.runs, idle_rss_growth_mb=round(self.idle.growth_mb, 1),
                       idle_tick_ms=round(self.idle.idle_tick_ms_large, 2),
                       idle_enrolments_per_s=round(self.idle.runs / self.idle.enrol_seconds))  # fmt: skip
        out["client_peak_rss_mb"] = round(self.client_peak_rss_mb, 1)
        return out

    def json_line(self) -> str:
        return json.dumps(self.summary(), sort_keys=True)

    def table(self) -> str:
        rows: list[tuple[str, str, str]] = []

        def row(label: str, value: str, target: str = "") -> None:
            rows.append((label, value, target))

        first = self.engine[0] if self.engine else None
        if first is not None:
            row("step transitions", f"{first.transitions:,}", f"{self.expected.transitions:,} expected")
            row("bulk_execute", f"{first.enrolments_per_s:,.0f} enrolments/s", f">= {TARGET_ENROLMENTS_PER_S:,}")
            audit = first.correctness
            row("audit log", f"{audit.audit_bytes / max(first.transitions, 1):,.0f} B per transition "
                f"({audit.audit_rows:,} rows, {audit.audit_bytes / 1e6:,.1f} MB)")  # fmt: skip
        for run in self.engine:
            row(f"end to end, {run.daemons} daemon(s)", f"{run.transitions_per_s:,.0f} transitions/s ({run.seconds:.2f} s)",
                f">= {TARGET_TRANSITIONS_PER_S:,}")  # fmt: skip
            row(f"peak RSS, {run.daemons} daemon(s)", f"{run.peak_rss_mb:,.0f} MB per daemon")
            if run.cpu_seconds:
                spent = ", ".join(f"{name} {1e6 * seconds / run.transitions:,.0f}" for name, seconds in run.cpu_seconds.items())
                row(f"CPU per transition, {run.daemons} daemon(s)", f"{spent} µs")
        if self.raw is not None and first is not None:
            raw = f"{self.raw.rows_per_s:,.0f} rows/s ({self.raw.rows:,} x {self.raw.row_bytes} B in {self.raw.seconds:.2f} s)"
            row("raw write limit", raw)
            row("engine / raw write limit", f"{self.raw.seconds / first.seconds:.0%}", f">= {TARGET_WRITE_EFFICIENCY:.0%}")
        if self.replay is not None:
            row("replay", f"{self.replay.runs_per_s:,.0f} runs/s ({self.replay.identical:,}/{self.replay.runs:,} identical, "
                f"{self.replay.chains_valid:,} chains valid)", f">= {TARGET_REPLAYS_PER_S:,}")  # fmt: skip
        if self.idle is not None:
            row(f"daemon RSS, {self.idle.small_runs:,} -> {self.idle.runs:,} waiting runs", f"{self.idle.growth_mb:+.1f} MB "
                f"({self.idle.rss_small_mb:.0f} -> {self.idle.rss_large_mb:.0f})", f"<= {TARGET_IDLE_GROWTH_MB} MB")  # fmt: skip
            idle = (f"{self.idle.idle_tick_ms_large:.2f} ms mean of {self.idle.idle_ticks} "
                    f"(at {self.idle.small_runs:,}: {self.idle.idle_tick_ms_small:.2f} ms)")
            row(f"tick with nothing due, {self.idle.runs:,} waiting", idle, f"< {TARGET_IDLE_TICK_MS} ms")
        row("bench process peak RSS", f"{self.client_peak_rss_mb:,.0f} MB")
        width = max(len(r[0]) for r in rows)
        vwidth = max(len(r[1]) for r in rows)
        head = f"dee bench: workload outreach-v2, {self.contacts:,} contacts, {self.partitions} partitions, {self.cores} cores"
        lines = [head, ""] + [f"  {a:<{width}}  {b:<{vwidth}}  {c}".rstrip() for a, b, c in rows]
        problems = self.problems()
        lines += ["", "correct: every figure checked" if not problems else "INCORRECT:"] + [f"  - {p}" for p in problems]
        return "\n".join(lines)
