"""The Redis URL and the kind of server it reaches must agree, and the CLI says so in one line
(exit code 2, the password masked) when they do not: a plain `redis://` URL that points at a
node of a real Redis Cluster (tests.peers.redis_cluster) is told to use `redis+cluster://`, a
`redis+cluster://` URL that points at the single shared Redis is told to use `redis://`, and a
cluster URL with a database number is refused before anything is sent. With the right scheme
`dee health` reaches the cluster; and over TLS, as the ACL users docs/securing-redis.md sets up
(with what it adds for a cluster), a daemon and a publisher run a workload through every code
path that talks to Redis with nothing refused on any node."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from dee import Engine
from dee.config import EngineConfig
from dee.ops.cli import main
from dee.ops.scratch import scratch_deployment
from tests.integration.conftest import REDIS_URL, deployment_config
from tests.integration.test_redis_acl_tls import DAEMON, DOC, EXPECTED, PUBLISHER, RULES, acl_file_line, new_users, workload
from tests.peers.redis_cluster import RedisCluster, redis_cluster

USAGE = 2
CLUSTER_RULES = "+cluster|slots +command"  # what a user needs besides on a cluster (docs/securing-redis.md)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with redis_cluster(tmp_path / "cluster") as started:
        yield started


async def dee(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], config: EngineConfig, redis: str,
              *argv: str) -> tuple[int, str, str]:  # fmt: skip
    """Run the CLI on this deployment with `redis` as REDIS_URL: exit code, stdout, stderr."""
    with monkeypatch.context() as patch:
        patch.setenv("DATABASE_URL", config.database)
        patch.setenv("REDIS_URL", redis)
        patch.setenv("DEE_NAMESPACE", config.namespace)
        patch.setenv("DEE_SCHEDULER_PARTITIONS", str(config.scheduler.partitions))
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
    return code, out, err


async def test_a_plain_url_at_a_cluster_node_is_told_to_use_the_cluster_scheme(
    deployment: EngineConfig, cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = cluster.nodes[0].port
    code, _, err = await dee(monkeypatch, capsys, deployment, f"redis://:{cluster.password}@127.0.0.1:{port}/0", "runs", "list")
    assert code == USAGE, err
    assert err == (f"dee: redis = redis://:***@127.0.0.1:{port}/0: the server is a Redis Cluster node; "
                   f"use redis+cluster://:***@127.0.0.1:{port}\n")  # fmt: skip


async def test_a_cluster_url_at_a_single_server_is_told_to_use_the_plain_scheme(
    deployment: EngineConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = REDIS_URL.replace("redis://", "redis+cluster://", 1).removesuffix("/0")
    code, _, err = await dee(monkeypatch, capsys, deployment, url, "runs", "list")
    assert code == USAGE, err
    plain = url.replace("redis+cluster://", "redis://", 1)
    assert err == f"dee: redis = {url}: the server is not a Redis Cluster node; use {plain}\n", err


async def test_a_cluster_url_with_a_database_number_and_a_cluster_that_answers(
    deployment: EngineConfig, cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await dee(monkeypatch, capsys, deployment, cluster.url() + "/3", "runs", "list")
    assert code == USAGE and err.count("\n") == 1, err
    assert err.endswith(": a Redis Cluster has only database 0; drop /3 from the URL\n") and cluster.password not in err, err
    # the right scheme: `dee health` reaches Redis (the partitions are nobody's: no daemon runs)
    _, out, err = await dee(monkeypatch, capsys, deployment, cluster.url(), "health")
    masked = re.escape(f"redis+cluster://:***@127.0.0.1:{cluster.nodes[0].port}")
    assert re.search(rf"^ok +redis +{masked}$", out, re.M), out + err
    assert cluster.password not in out + err


async def test_over_tls_as_the_documented_acl_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert f"`{CLUSTER_RULES}`" in DOC.read_text()
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")
    users = new_users()
    acl = [f"{acl_file_line(user, users[user], config.namespace)} {CLUSTER_RULES}" for user in RULES]
    with redis_cluster(tmp_path / "cluster", tls=True, acl=acl) as cluster:
        async with scratch_deployment(msgspec.structs.replace(config, redis=cluster.url())) as admin_config:
            daemon, publisher = ({user: msgspec.structs.replace(admin_config, redis=cluster.url(user=user, password=users[user]))
                                  for user in (DAEMON, PUBLISHER)}.values())  # fmt: skip
            assert publisher.redis.startswith(f"rediss+cluster://{PUBLISHER}:") and "?ssl_ca_certs=" in publisher.redis
            async with Engine(daemon, scheduler=True) as engine, Engine(publisher) as client:
                seen = await workload(engine, client, "gone@fail.test")
            assert seen == {**EXPECTED, "gone": ("failed", None)}, seen
            for node in cluster.nodes:
                with cluster.node_client(node) as admin:
                    refused = [e for e in admin.execute_command("ACL LOG", 256) if e["username"] in RULES]
                    assert refused == [], (node.port, refused)
            _, out, err = await dee(monkeypatch, capsys, admin_config, publisher.redis, "health")  # the partitions are nobody's: exit 1
            masked = re.escape(f"rediss+cluster://{PUBLISHER}:***@127.0.0.1:{cluster.nodes[0].port}?ssl_ca_certs=")
            assert re.search(rf"^ok +redis +{masked}\S+$", out, re.M), out + err
            assert users[PUBLISHER] not in out + err
