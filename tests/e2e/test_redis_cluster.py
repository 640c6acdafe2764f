"""Two `dee run` processes on a real three-master Redis Cluster (`redis+cluster://`, with a
password) and a scratch PostgreSQL database: 40 contacts enrolled through the outreach plan all
complete on the cold path when the manual clock is driven to the end, every channel action was
sent exactly once (the simulated adapters' ledgers, whose script writes three hashes in one
slot), and the deployment's keys really are spread over all three masters. Neither daemon logs
the cluster's password or a traceback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from dee import EngineConfig, load_plan
from dee.ops import consents
from dee.ops.scratch import scratch_deployment
from dee.scheduler.coordinator import assignment
from tests.e2e.conftest import LEASE_TTL_MS, PARTITIONS, Daemon, engine_client, owners, simulated_sends, wait_for
from tests.integration.conftest import deployment_config
from tests.peers.redis_cluster import RedisCluster, redis_cluster

OUTREACH = "config/plans/sales-outreach-v2.yaml"
DAY = 86_400
CONTACTS = 40
ACTIONS_PER_RUN = 4  # the cold path sends: initial email, cold follow-up, the call, the break-up email


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with redis_cluster(tmp_path / "cluster") as started:
        yield started


@pytest.fixture
async def deployment(cluster: RedisCluster) -> AsyncIterator[EngineConfig]:
    name = f"dee_e2e_{uuid.uuid4().hex[:12]}"
    config = deployment_config(name, partitions=PARTITIONS, lease_ttl_ms=LEASE_TTL_MS)
    async with scratch_deployment(msgspec.structs.replace(config, redis=cluster.url())) as ready:
        yield ready


def contact(cid: str) -> dict[str, object]:
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "attributes": {"company": "Acme"}}


async def test_two_daemons_run_a_campaign_on_a_three_master_redis_cluster(
    deployment: EngineConfig, cluster: RedisCluster, tmp_path: Path
) -> None:
    config = deployment
    started = time.monotonic()
    daemons = [Daemon(config, name, tmp_path) for name in ("a", "b")]
    try:
        for daemon in daemons:
            daemon.start()
        split = assignment(PARTITIONS, ["a", "b"])

        async def split_between_them() -> bool:
            return await owners(config.database) == split

        await wait_for(split_between_them, 30, "the partitions split between a and b")
        plan = load_plan(OUTREACH)
        async with engine_client(config) as client:
            cids = [f"cluster-{i:02d}" for i in range(CONTACTS)]
            await consents.grant(client, cids, "voice", "web form")
            runs = await asyncio.gather(*(client.execute(plan, contact(c), {"product": "DEE"}) for c in cids))
            await client.advance_clock(10 * DAY)
            keys_of: dict[tuple[str, str | None], set[str]] = defaultdict(set)
            for run in runs:
                view = await client.get_run(run.id)
                assert (view.status, view.outcome) == ("completed", "no_response"), view
                for entry in await client.audit.get_by_run(run.id):
                    if entry.action == "step.dispatched" and entry.output:
                        keys_of[(run.id, entry.step_id)].add(entry.output["idempotencyKey"])
        assert len(keys_of) == ACTIONS_PER_RUN * CONTACTS and all(len(k) == 1 for k in keys_of.values())

        # every action was sent once and only once, through the cluster's ledgers
        sent = await simulated_sends(config)
        assert set(sent) == set().union(*keys_of.values()), "the adapters sent other actions than the runs dispatched"
        assert set(sent.values()) == {1}, {k: n for k, n in sent.items() if n != 1}

        # the deployment's keys live on every master, not on one
        per_master: dict[int, int] = {}
        for node in cluster.nodes:
            with cluster.node_client(node) as plain:
                per_master[node.port] = sum(1 for _ in plain.scan_iter(match=f"{config.namespace}:*", count=1000))
        assert all(count > 0 for count in per_master.values()), per_master
        for daemon in daemons:
            assert daemon.alive, daemon.log()[-3000:]
            assert await daemon.terminate() == 0
            log = daemon.log()
            assert cluster.password not in log, f"daemon {daemon.instance} logged the cluster's password"
            assert "Traceback" not in log, f"daemon {daemon.instance} logged a traceback:\n{log[-3000:]}"
        print(f"\n{CONTACTS} runs, {len(sent)} actions on a 3-master cluster in {time.monotonic() - started:.1f} s; "
              f"keys per master: {per_master}")  # fmt: skip
    finally:
        for daemon in daemons:
            daemon.stop_now()
