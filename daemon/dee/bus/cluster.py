"""Redis Cluster: a URL `redis+cluster://` (or `rediss+cluster://`, with TLS) names one node;
the client learns the others from it and sends each command to the master of its key's slot.

What cannot work is refused as a one-line `ConfigError` before anything is sent: a database
number other than 0 (a cluster has only database 0), a cluster URL whose server is not a
cluster node, and a plain `redis://` URL whose server is one (its multi-key commands would
fail one by one, CROSSSLOT or MOVED, in the middle of the work).
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dee.bus.streams import Keys
from dee.errors import ConfigError
from dee.redact import redact, redact_text

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # -> the scheme of one node
# two reply streams whose slots differ in every namespace without a `{`: CRC16 is linear, so the
# last byte's change ('0' -> '1') changes the slot by the same non-zero XOR whatever precedes it
PROBES = ("cluster-probe-0", "cluster-probe-1")
_STREAM_READS = ("XREAD", "XREADGROUP")


def is_cluster(url: str) -> bool:
    """Whether the URL names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return url.partition("://")[0].lower() in SCHEMES


class _Cluster(RedisCluster):
    """RedisCluster, routing stream reads by the stream's name without asking a server.

    XREAD and XREADGROUP have "movable keys": redis-py asks a node (COMMAND GETKEYS) where the
    keys of every such command are, a second round trip for each read of a partition. Their
    keys are the first half of what follows STREAMS; the slot is worked out here instead."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in _STREAM_READS:
            words = [str(a, "utf-8") if isinstance(a, bytes) else str(a) for a in args]
            upper = [w.upper() for w in words]
            if "STREAMS" in upper:
                after = args[upper.index("STREAMS") + 1 :]
                streams = after[: len(after) // 2]
                slots = {self.keyslot(stream) for stream in streams}
                if len(slots) == 1:
                    return slots.pop()
        return await super()._determine_slot(command, *args)


def cluster_client(url: str, max_connections: int, connect_timeout_s: float, health_check_s: float) -> aioredis.Redis:
    """A RedisCluster for a cluster URL: user, password, TLS and the URL's query options
    (`ssl_ca_certs=...`) are those of a single server's URL, used for every node.
    `max_connections` bounds each node's pool (a node serves a share of the keys, so the bound
    of one server is ample for it); unlike a single server's pool it does not wait for a free
    connection, a command past the bound fails (and is retried like any Redis hiccup).
    Commands are not retried by the client, as on a single server (`connect.client`): a lost
    XREADGROUP reply must be read again from the pending list, which the callers do; MOVED
    and ASK redirections are still followed.

    Typed as `aioredis.Redis`: the daemon's modules speak to either through the same commands
    (streams, strings, hashes, scripts, non-transactional pipelines, SCAN), which RedisCluster
    routes by key slot; every multi-key command keeps its keys in one slot (`Keys`), which
    tests/unit/test_key_slots.py checks."""
    scheme, _, rest = url.partition("://")
    node_url = f"{SCHEMES[scheme.lower()]}://{rest}"
    try:
        db = int(parse_url(node_url).get("db") or 0)
    except ValueError as exc:
        raise ConfigError(f"redis = {redact(url)}: {redact_text(str(exc))}") from None
    if db != 0:
        raise ConfigError(f"redis = {redact(url)}: a Redis Cluster has only database 0; drop /{db} from the URL")
    if not urlsplit(node_url).hostname:
        raise ConfigError(f"redis = {redact(url)}: a Redis Cluster URL names one node by host and port")
    cluster = _Cluster.from_url(
        node_url, max_connections=max_connections, socket_connect_timeout=connect_timeout_s,
        health_check_interval=health_check_s, retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    return cast(aioredis.Redis, cluster)


def refused_kind(url: str, exc: redis_errors.RedisClusterException) -> ConfigError | None:
    """The ConfigError for a cluster URL whose server is not a cluster node, or None when the
    cluster client failed for another reason."""
    if "not enabled" in str(exc):
        return ConfigError(f"redis = {redact(url)}: the server is not a Redis Cluster node; use {plain(url)}")
    return None


async def refuse_cluster_node(redis: aioredis.Redis, url: str, namespace: str) -> None:
    """A ConfigError when the server of a plain URL has cluster mode on: a read of two reply
    streams in different slots is CROSSSLOT on any cluster node and nothing on a single server.
    (Not INFO or HELLO: the ACL users of docs/securing-redis.md may read reply streams, and
    nothing else that would tell.) The streams never exist."""
    probe = {Keys(namespace).reply(name): "0-0" for name in PROBES}
    try:
        await redis.xread(probe, count=1)  # type: ignore[arg-type]
    except redis_errors.ClusterCrossSlotError:
        raise ConfigError(f"redis = {redact(url)}: the server is a Redis Cluster node; use {clustered(url)}") from None


def clustered(url: str) -> str:
    """The URL's cluster scheme, as advice (`rediss://h:p/0` -> `rediss+cluster://h:p`)."""
    scheme, _, rest = redact(url).partition("://")
    return f"{scheme}+cluster://{re.sub(r'/[0-9]*(?=[?#]|$)', '', rest, count=1)}"


def plain(url: str) -> str:
    """The URL's single-server scheme, as advice (`redis+cluster://h:p` -> `redis://h:p`)."""
    scheme, _, rest = redact(url).partition("://")
    return f"{SCHEMES.get(scheme.lower(), scheme)}://{rest}"
