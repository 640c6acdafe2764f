"""On a Redis Cluster a command's keys must share one hash slot: every multi-key command DEE
sends (the admission script of deliverability limits and budgets, the simulated ledgers'
script) is checked here with the slot Redis computes (CRC16 of the key's hash tag, redis-py's
`key_slot`), for the keys the code itself builds, in several namespaces and with names that
hold braces. A future key that breaks the rule fails here, not in a cluster. The refusals of
a cluster URL that cannot work need no server and are checked here too."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from redis.crc import key_slot

from dee.bus import cluster
from dee.bus import connect as redis_connect
from dee.bus.streams import Keys
from dee.errors import ConfigError
from dee.kernel.effects import DispatchRequest
from dee.limits.counters import SendClock
from dee.limits.rules import Rules
from dee.limits.settings import Budget, BudgetsConfig, DeliverabilityConfig, Warmup
from dee.limits.shared import RedisLimiter
from dee.plugin.ledger import RedisLedger

NAMESPACES = ("dee", "dee-simulate", "acme_prod", "tenant:7", "x{y}z")
NOW_MS = int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp() * 1000)


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def every_limit() -> Rules:
    """Rules that charge every kind of counter: daily limit, warm-up, domain rate, budgets."""
    deliverability = DeliverabilityConfig(
        daily_limit=100, domain_rates={"*": "10/min", "gmail.com": "2/s"}, warmup={"acme.test": Warmup(start="2026-03-01", daily=(5, 10))},
    )  # fmt: skip
    budgets = BudgetsConfig(limits=(
        Budget(channel="email", limit=Decimal("10"), cost_per_send=Decimal("0.01")),
        Budget(channel="voice", limit=Decimal("10"), cost_per_send=Decimal("0.01"), cost_per_minute=Decimal("0.02"), period="month"),
    ))  # fmt: skip
    rules = Rules.of(deliverability, budgets)
    assert rules is not None
    return rules


def requests() -> list[DispatchRequest]:
    """An email and a call, from and to names with braces (a hash tag inside a counter's name)."""
    mail = {"to": "pat@gmail.com", "from": "{sales}@acme.test", "subject": "s", "text": "t"}
    call = {"to": "+15550100", "from": "+15550000", "maxDurationMs": 60_000}
    return [
        DispatchRequest("run", "mail", "email", "{key}-1", "<m@x>", 1, mail, 0, plan_id="out{reach}"),
        DispatchRequest("run", "call", "voice", "key-2", "<c@x>", 2, call, 0, plan_id="outreach"),
    ]  # fmt: skip


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_an_admission_keeps_its_mark_and_every_counter_in_one_slot(namespace: str) -> None:
    rules = every_limit()
    limiter = RedisLimiter(rules, SendClock(NOW_MS, 1), redis_connect.client("redis://127.0.0.1:1/0"), Keys(namespace))
    for request in requests():
        charges = rules.charges(request, NOW_MS)
        keys = limiter.admission_keys(f"admitted:{request.idempotency_key}:{request.dispatch_no}", charges)
        assert len(keys) >= {"email": 5, "voice": 2}[request.channel], keys  # the mark and every kind of counter
        assert len(slots(keys)) == 1, {key: key_slot(key.encode()) for key in keys}


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("channel", ["email", "voice", "sms"])
def test_a_simulated_ledger_keeps_its_three_hashes_in_one_slot(namespace: str, channel: str) -> None:
    ledger = RedisLedger("redis://127.0.0.1:1/0", channel, namespace)
    assert len(ledger.keys) == 3 and len(slots(ledger.keys)) == 1, ledger.keys


def test_the_partitions_streams_spread_over_the_slots() -> None:
    """A partition's inbound stream and its dead letters share a slot; 16 partitions spread
    over enough slots that three masters each hold some."""
    keys = Keys("dee")
    for partition in range(16):
        assert len(slots([keys.inbound(partition), keys.dead(partition)])) == 1
    thirds = {key_slot(keys.inbound(p).encode()) * 3 // 16_384 for p in range(16)}
    assert thirds == {0, 1, 2}


@pytest.mark.parametrize("namespace", ["dee", "a", "dee_e2e_0123456789ab", "tenant:7", "x-y_z.0"])
def test_the_cluster_probe_reads_two_streams_in_different_slots(namespace: str) -> None:
    """What tells a plain URL that its server is a cluster node is a CROSSSLOT: only if the two
    probe streams are in different slots."""
    keys = Keys(namespace)
    assert len(slots([keys.reply(name) for name in cluster.PROBES])) == 2


def test_a_cluster_url_with_a_database_number_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        redis_connect.client("redis+cluster://dee:s3cret@10.0.0.5:7000/2")
    message = str(caught.value)
    assert message == "redis = redis+cluster://dee:***@10.0.0.5:7000/2: a Redis Cluster has only database 0; drop /2 from the URL"
    assert cluster.is_cluster("rediss+cluster://h:1") and not cluster.is_cluster("redis://h:1")
    assert cluster.clustered("rediss://u:pw@h:1/0?ssl_ca_certs=/ca.crt") == "rediss+cluster://u:***@h:1?ssl_ca_certs=/ca.crt"
    assert cluster.plain("redis+cluster://:pw@h:1") == "redis://:***@h:1"


async def test_a_stream_read_is_routed_by_its_stream_without_asking_a_server() -> None:
    """XREADGROUP's keys are "movable": without the cluster client's own rule each read would
    first ask a node (COMMAND GETKEYS). Nothing listens on port 1, so a question would fail."""
    client = redis_connect.client("redis+cluster://127.0.0.1:1")
    stream = Keys("dee").inbound(3)
    read = ("GROUP", "dee", "a", "COUNT", 10, "BLOCK", 250, "STREAMS", stream, ">")
    assert await client._determine_slot("XREADGROUP", *read) == key_slot(stream.encode())  # type: ignore[attr-defined]
    assert await client._determine_slot("XREAD", "COUNT", 1, "STREAMS", stream, "0-0") == key_slot(stream.encode())  # type: ignore[attr-defined]
