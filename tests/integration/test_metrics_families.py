"""A workload through a real `dee run` process, then its /metrics: every family the operations
docs promise has samples, the labels stay within their bounds, and the runs by status it reports
are exactly the database's. The workload has a send a gate denies (no consent), a call that fails, a call deferred
to the contact's calling hours, paused and cancelled runs, a command refused, dead letters on an
inbound and on a dispatch stream, and a lease taken away from the daemon."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from dee import Engine, EngineConfig, load_plan, partition_for
from dee.bus.streams import FIELD, GROUP, Keys
from dee.errors import DeeError
from dee.metrics import DEAD_LETTER_SOURCES, OUTCOMES_PER_STEP_TYPE, Metrics, build_version
from dee.ops.bench.daemons import DaemonProcess
from dee.records import ConsentRecord
from dee.scheduler.backlog import BacklogSampler
from dee.scheduler.outages import Outages
from dee.scheduler.runcounts import STATUSES

ROOT = Path(__file__).resolve().parents[2]
OUTREACH = ROOT / "config" / "plans" / "sales-outreach-v2.yaml"
PARTITIONS = 4
DAY = 86_400
# the families of the operations docs' table; the ingress's (its own test) and the limits' (no
# limit is configured here) are the only ones a daemon without them leaves empty
REQUIRED = (
    "dee_build_info", "dee_tick_duration_seconds", "dee_tick_lag_seconds", "dee_runs", "dee_runs_processed",
    "dee_step_transitions", "dee_steps", "dee_audit_entries", "dee_inbound_messages", "dee_inbound_backlog_messages",
    "dee_dead_letters", "dee_policy_denials", "dee_policy_verdicts", "dee_dispatch_latency_seconds",
    "dee_dispatch_results", "dee_dispatch_in_flight", "dee_dispatch_backlog_messages", "dee_partitions_owned",
    "dee_lease_losses", "process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "python_info",
    "python_gc_collections",
)  # fmt: skip


def scrape(port: int) -> dict[str, Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return {family.name: family for family in text_string_to_metric_families(response.read().decode())}


def values(family: Metric, *labels: str) -> dict[tuple[str, ...], float]:
    """Sample values (of the family's own samples: `_total`, not `_created`) summed by the values
    of `labels` (none: the family's total)."""
    own = {family.name, f"{family.name}_total", f"{family.name}_count"}
    summed: dict[tuple[str, ...], float] = {}
    for sample in family.samples:
        if sample.name in own:
            key = tuple(sample.labels[k] for k in labels)
            summed[key] = summed.get(key, 0.0) + sample.value
    return summed


async def until(process: DaemonProcess, check: Any, what: str, timeout: float = 30.0) -> dict[str, Metric]:
    """Scrape the daemon until `check` holds (it may not listen yet at first; it must stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        try:
            families = await asyncio.to_thread(scrape, process.metrics_port)
        except OSError:
            families = None
        if families is not None and check(families):
            return families
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.2)


def owned(families: dict[str, Metric]) -> float:
    return values(families["dee_partitions_owned"]).get((), 0.0)


@pytest.fixture
async def daemon(deployment: EngineConfig, tmp_path: Path) -> AsyncIterator[tuple[EngineConfig, DaemonProcess]]:
    config = msgspec.structs.replace(deployment, config_dir=str(ROOT / "config"))
    process = DaemonProcess(config, "metrics-1", tmp_path, env={"DEE_SCHEDULER_LEASE_TTL_MS": "2000"})
    process.start()
    try:
        await until(process, lambda f: owned(f) == PARTITIONS, "daemon owning every partition")
        yield config, process
    finally:
        await process.stop()


async def test_every_family_has_samples_after_a_workload(daemon: tuple[EngineConfig, DaemonProcess]) -> None:
    config, process = daemon
    keys = Keys(config.namespace)
    plan = load_plan(OUTREACH)
    redis = aioredis.from_url(config.redis)
    db = await asyncpg.connect(config.database)
    try:
        async with Engine(config) as engine:
            await engine.record_consent(ConsentRecord(contact_id="m-tokyo", channel="voice", status="granted", source="form"))
            await engine.record_consent(ConsentRecord(contact_id="m-revoked", channel="email", status="revoked", source="reply"))
            tokyo = {"id": "m-tokyo", "email": "t@acme.test", "phone": "+81312345678", "timezone": "Asia/Tokyo",
                     "attributes": {"company": "A"}}  # fmt: skip
            await engine.execute(plan, tokyo, {"product": "DEE"}, start_at=6 * 3600)  # its call waits for 08:00 in Tokyo
            people = {cid: {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550100", "attributes": {"company": "A"}}
                      for cid in ("m-revoked", "m-opens", "m-pause", "m-cancel")}  # fmt: skip
            people["m-plain"] = {"id": "m-plain", "email": "p@acme.test", "attributes": {"company": "A"}}  # no phone: its call fails
            runs = {cid: await engine.execute(plan, contact, {"product": "DEE"}) for cid, contact in people.items()}
            await engine.run_until_idle()
            await engine.ingest_event("email.opened", "m-opens", {}, step_id="initial-email")
            await engine.pause_run(runs["m-pause"].id)
            await engine.cancel_run(runs["m-cancel"].id, "changed our mind")
            with pytest.raises(DeeError):
                await engine.pause_run(runs["m-cancel"].id)  # refused: it has ended (and dead-lettered with why)

            # a lease taken away: the daemon's next commit or heartbeat finds it gone, and it takes the partition anew
            lost = partition_for("m-plain", PARTITIONS)
            await db.execute("UPDATE partitions SET epoch = epoch + 1 WHERE partition = $1", lost)
            await until(process, lambda f: values(f["dee_lease_losses"]) == {(): 1.0} and owned(f) == PARTITIONS,
                        "lease loss, then the partition owned again")  # fmt: skip

            await redis.xadd(keys.inbound(1), {FIELD: b"not a message"})
            await redis.xadd(keys.dispatch("email"), {FIELD: b"{}"})
            await engine.advance_clock(10 * DAY)
            await engine.run_until_idle()
        wanted = Counter({r["status"]: r["n"] for r in await db.fetch("SELECT status, count(*) AS n FROM runs GROUP BY 1")})

        def counted(families: dict[str, Metric]) -> bool:
            by_status = {status: n for (status,), n in values(families["dee_runs"], "status").items()}
            dead = values(families["dee_dead_letters"], "source")
            every = {status: wanted[status] for status in STATUSES}
            sampled = len(values(families["dee_inbound_backlog_messages"], "partition")) == PARTITIONS  # at most 1 s after a take-over
            return by_status == every and dead.get(("dispatch",), 0) >= 1 and dead.get(("inbound",), 0) >= 1 and sampled

        families = await until(process, counted, "runs by status equal to the database's, the dead letters, every backlog")
    finally:
        await db.close()
        await redis.aclose()

    empty = [name for name in REQUIRED if name not in families or not families[name].samples]
    assert not empty, f"families without samples: {empty}"
    assert wanted == Counter({"completed": 3, "failed": 1, "cancelled": 1, "paused": 1})  # the workload as planned
    runs_series = values(families["dee_runs"], "partition", "status")
    assert {p for p, _ in runs_series} == {str(p) for p in range(PARTITIONS)}
    assert {s for _, s in runs_series} == set(STATUSES)  # every status, zeros included, bounded to the status machine

    steps = values(families["dee_steps"], "type", "outcome")
    outcomes: dict[str, set[str]] = {}
    for step_type, outcome in steps:
        outcomes.setdefault(step_type, set()).add(outcome)
    assert outcomes["branch"] == {"branch"}  # "branch:warm-follow-up" and "branch:cold-follow-up" are one class
    assert {"delivered", "skipped"} <= outcomes["sendEmail"] and outcomes["wait"] == {"completed"}
    assert outcomes["end"] == {"no_response"} and "error" in outcomes["sendVoice"]  # m-plain's call could not be made
    assert all(":" not in o and len(of_type) <= OUTCOMES_PER_STEP_TYPE for of_type in outcomes.values() for o in of_type)

    denials = values(families["dee_policy_denials"], "gate", "verdict")
    assert denials[("consent", "skip")] >= 1 and denials[("calling-hours", "defer")] == 1
    verdicts = values(families["dee_policy_verdicts"], "verdict")
    assert verdicts[("defer",)] == 1 and verdicts[("skip",)] >= 1 and verdicts[("allow",)] >= 1

    dead = values(families["dee_dead_letters"], "partition", "source")
    assert {source for _, source in dead} <= set(DEAD_LETTER_SOURCES)
    assert dead[("1", "inbound")] == 1 and dead[("", "dispatch")] == 1 and sum(v for (_, s), v in dead.items() if s == "refused") >= 1

    results = values(families["dee_dispatch_results"], "channel", "adapter", "result")
    assert results[("email", "simulated", "delivered")] >= 1 and results[("voice", "simulated", "delivered")] == 1
    latency = values(families["dee_dispatch_latency_seconds"], "channel", "adapter")
    assert latency[("email", "simulated")] == sum(v for (c, _, _), v in results.items() if c == "email")

    assert set(values(families["dee_tick_lag_seconds"], "partition").values()) == {0.0}  # a manual clock never lags
    assert set(values(families["dee_inbound_backlog_messages"], "partition")) == {(str(p),) for p in range(PARTITIONS)}
    assert set(values(families["dee_dispatch_backlog_messages"], "channel")) == {("email",), ("voice",)}
    assert values(families["dee_build_info"], "version") == {(build_version(),): 1.0}
    assert values(families["process_resident_memory_bytes"])[()] > 0


def backlog(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("dee_inbound_backlog_messages", {"partition": "2"})


async def test_the_backlog_is_what_the_group_has_not_read_or_not_acknowledged(deployment: EngineConfig) -> None:
    """Against Redis itself: 5 entries, 2 read and not acknowledged, 1 of them acknowledged after."""
    keys = Keys(deployment.namespace)
    stream = keys.inbound(2)
    metrics = Metrics()
    redis = aioredis.from_url(deployment.redis)
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for n in range(5):
            await redis.xadd(stream, {FIELD: str(n).encode()})
        read = await redis.xreadgroup(GROUP, "c", {stream: ">"}, count=2)
        sampler = BacklogSampler(redis, keys, metrics, lambda: {2}, [], Outages())
        await sampler.sample()
        assert backlog(metrics) == 5  # 3 not read, 2 not acknowledged
        await redis.xack(stream, GROUP, read[0][1][0][0])
        await sampler.sample()
        assert backlog(metrics) == 4
        sampler.owned = lambda: set()  # given up: no longer sampled
        await redis.xadd(stream, {FIELD: b"5"})
        await sampler.sample()
        assert backlog(metrics) == 4
    finally:
        await redis.aclose()
