"""The hostile wire corpus (issue 12): more than 10 000 hostile entries of every kind the bus must
refuse, XADDed raw to the inbound streams of a running `dee run` (16 partitions) between a few
hundred valid executes and events, the way a publisher in another language writes them.

The corpus (`tests/e2e/hostile.py`, seeded: `DEE_E2E_HOSTILE_SEED`) goes out in three phases,
each read and acknowledged in full before the next: the valid enrolments among most of the
hostile entries; then the valid events, the wrong-partition executes published again to their
right stream (a refusal for the wrong partition must not use up the commandId), and what needs
the runs to exist (commandIds reused on other partitions, taken runIds, two executes racing for
one fresh runId on two partitions, commands their run refuses); last, entries whose values
PostgreSQL cannot store, between a few valid events.

Afterwards: the daemon is up, healthy, and still owns its 16 partitions under the same fencing
epochs; every hostile entry left exactly one dead letter with the reason of its class, in its
partition's dead-letter stream, and an error reply when it named one of our reply streams;
every valid command was applied once (its run exists once, its event is journaled once, one ok
reply); no hostile entry changed anything (no other run or audit entry, suppression, consent,
contact flag or channel action); every Redis key outside the deployment's namespace (canaries,
among them a stream that looks like another deployment's reply stream) is byte for byte what it
was; no traceback in the daemon's log. The deployment gets a Redis database of its own, so that
every key outside its namespace is one the test watches.

The counts per class are printed (`-s`), then everything that went wrong, all of it at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from dee import Duration, Engine, EngineConfig, create_plan, steps, transitions
from dee.bus import messages as wire
from dee.bus.streams import GROUP, Keys
from dee.ops.scratch import scratch_deployment
from dee.plan.model import Plan
from tests.e2e.conftest import Daemon, engine_client, has_work, lease_table, wait_for
from tests.e2e.hostile import COUNTS, PLAN_ID, SEED, Corpus, Hostile, Item, Valid, m
from tests.integration.conftest import REDIS_URL, deployment_config

PARTITIONS = 16
INSTANCE = "hostile"
LOCK = "dee-hostile-corpus:lock"  # which Redis database a run of this test holds
PUBLISH_CHUNK = 500
PHASE_TIMEOUT_S = 120
SEED_USED = int(os.environ.get("DEE_E2E_HOSTILE_SEED", str(SEED)))
SHOWN = 5  # examples shown per kind of problem

Record = dict[bytes, bytes]
Published = dict[tuple[bytes, bytes], Item]  # (stream, entry id) -> what the test XADDed there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def database_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
async def isolated() -> AsyncIterator[EngineConfig]:
    """A fresh deployment (16 partitions, manual clock) in an empty Redis database of its own
    (1-15, held with a lock key while the test runs)."""
    token = uuid.uuid4().hex.encode()
    held: aioredis.Redis | None = None
    url = ""
    for db in range(15, 0, -1):
        url = database_url(REDIS_URL, db)
        client = aioredis.from_url(url)
        if await client.set(LOCK, token, nx=True, ex=1800) and await client.dbsize() == 1:
            held = client
            break
        if await client.get(LOCK) == token:
            await client.delete(LOCK)
        await client.aclose()
    assert held is not None, "no empty Redis database (1-15) to run the hostile corpus in"
    config = msgspec.structs.replace(
        deployment_config(f"dee_e2e_{uuid.uuid4().hex[:12]}", partitions=PARTITIONS, lease_ttl_ms=10_000), redis=url
    )
    try:
        async with scratch_deployment(config):
            yield config
    finally:
        if await held.get(LOCK) == token:
            await held.delete(LOCK)
        await held.aclose()


@pytest.fixture
def daemon(isolated: EngineConfig, tmp_path: Path) -> Iterator[Daemon]:
    """One `dee run` of the deployment, serving /healthz and /readyz (not started yet)."""
    one = Daemon(isolated, INSTANCE, tmp_path)
    one.env.update({"DEE_METRICS_ENABLED": "true", "DEE_METRICS_HOST": "127.0.0.1", "DEE_METRICS_PORT": str(free_port())})
    yield one
    one.stop_now()
    lines = one.log().splitlines()
    print(f"\n---------- log of daemon {one.instance} (last 200 of {len(lines)} lines) ----------")
    print("\n".join(lines[-200:]))


def hold_plan() -> Plan:
    """Every valid run waits for 30 days (the manual clock never gets there), taking events."""
    return create_plan(
        id=PLAN_ID, name="Hostile hold",
        steps=[steps.wait(id="hold", duration=Duration(days=30)), steps.end(id="done", outcome="done")],
        transitions=transitions.linear(),
    )  # fmt: skip


# ---- canaries, and everything outside the namespace -------------------------------------------


async def plant_canaries(redis: aioredis.Redis, corpus: Corpus) -> list[str]:
    """Keys outside the namespace, several of them named by hostile replyTo fields; returns them."""
    ns = corpus.ns
    streams = [corpus.foreign_reply, "dee:reply:victim", "dee:{0}:in", f"{ns}x:reply:a", f"{ns.upper()}:reply:x",
               *(f"{corpus.foreign_ns}:{{{p}}}:in" for p in range(PARTITIONS))]  # fmt: skip
    for stream in streams:
        for i in range(3):
            await redis.xadd(stream, {b"m": json.dumps({"commandId": f"canary-{i}", "ok": True}).encode()})
    await redis.xgroup_create(f"{corpus.foreign_ns}:{{0}}:in", GROUP, id="0")
    await redis.set(ns, b"a key named like the namespace")
    await redis.set(f"{ns}reply:x", b"no colon")
    await redis.set("canary:string", b"untouched")
    await redis.hset("canary:hash", mapping={"a": "1", "b": "2"})
    await redis.rpush("canary:list", "x", "y", "z")
    await redis.sadd("canary:set", "x", "y")
    await redis.zadd("canary:zset", {"x": 1.0, "y": 2.0})
    return [*streams, ns, f"{ns}reply:x", "canary:string", "canary:hash", "canary:list", "canary:set", "canary:zset"]


async def outside(redis: aioredis.Redis, namespace: str) -> dict[bytes, tuple[bytes, bytes | None]]:
    """Every key outside the namespace: its type and its DUMP (the value, byte for byte)."""
    mine = f"{namespace}:".encode()
    found: dict[bytes, tuple[bytes, bytes | None]] = {}
    async for key in redis.scan_iter(count=1000):
        if not key.startswith(mine):
            found[key] = (cast(bytes, await redis.type(key)), await redis.dump(key))
    return found


# ---- publishing and settling ------------------------------------------------------------------


def target(item: Item) -> tuple[int, dict[bytes, bytes]]:
    if isinstance(item, tuple):
        pair, k = item
        partition, message = pair.members[k]
        return partition, m(message)
    return item.partition, item.fields


async def publish(redis: aioredis.Redis, keys: Keys, items: list[Item], published: Published) -> None:
    """XADD the items in order, `PUBLISH_CHUNK` to a pipeline (a race pair's members in one)."""
    start = 0
    while start < len(items):
        end = min(start + PUBLISH_CHUNK, len(items))
        if end < len(items) and isinstance(items[end], tuple) and items[end][1] == 1:  # type: ignore[index]
            end += 1
        chunk = items[start:end]
        async with redis.pipeline(transaction=False) as pipe:
            for item in chunk:
                partition, fields = target(item)
                pipe.xadd(keys.inbound(partition), fields)  # type: ignore[arg-type]
            ids = await pipe.execute()
        for item, entry_id in zip(chunk, ids, strict=True):
            partition, _ = target(item)
            entry = entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()
            published[(keys.inbound(partition).encode(), entry)] = item
            if isinstance(item, tuple):
                item[0].entry_ids.append(entry)
            else:
                item.entry_id = entry
        start = end


async def consumed(redis: aioredis.Redis, keys: Keys) -> bool:
    """Every entry of every inbound stream read by the group and acknowledged."""
    for p in range(PARTITIONS):
        stream = keys.inbound(p)
        last = (await redis.xinfo_stream(stream))["last-generated-id"]
        group = next(g for g in await redis.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode()))
        if group["pending"] or group["last-delivered-id"] != last:
            return False
    return True


async def settle(redis: aioredis.Redis, keys: Keys, client: Engine, pool: asyncpg.Pool, what: str) -> None:
    await wait_for(lambda: consumed(redis, keys), PHASE_TIMEOUT_S, f"every entry of {what} read and acknowledged", interval=0.1)
    await asyncio.wait_for(client.run_until_idle(), PHASE_TIMEOUT_S)

    async def idle() -> bool:
        return not await has_work(pool)

    await wait_for(idle, PHASE_TIMEOUT_S, f"no work left after {what}")


# ---- what the daemon wrote --------------------------------------------------------------------


async def everything(redis: aioredis.Redis, stream: str) -> list[tuple[bytes, Record]]:
    out: list[tuple[bytes, Record]] = []
    low = "-"
    while batch := cast(list[tuple[bytes, Record]], await redis.xrange(stream, min=low, count=2000)):
        out += batch
        ms, seq = batch[-1][0].decode().split("-")
        low = f"{ms}-{int(seq) + 1}"
    return out


def as_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Accounts:
    """Each dead letter and each reply, matched to the item of the corpus it is about: a dead
    letter of an entry by its stream entry id, a refusal at intake by the digest of the message
    it carries, a run's refusal by the commandId of the error reply it carries."""

    corpus: Corpus
    published: Published
    keys: Keys
    letters: dict[int, list[Record]] = field(default_factory=lambda: defaultdict(list))  # id(item) -> its dead letters
    stray: list[str] = field(default_factory=list)
    replies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.by_digest: dict[bytes, object] = {h.digest: h for h in self.corpus.hostile if h.digest is not None}
        for pair in self.corpus.races:
            for _, message in pair.members:
                self.by_digest[wire.digest(wire.decode(m(message)[b"m"]))] = message
        self.kernel = {h.command_id: h for h in self.corpus.hostile if h.stage == "kernel"}

    async def read(self, redis: aioredis.Redis) -> None:
        for p in range(PARTITIONS):
            for _, record in await everything(redis, self.keys.dead(p)):
                self.letter(p, record)
        for stream in sorted({self.corpus.valid_reply, *(self.corpus.reply(k) for k in COUNTS)}):
            for _, fields in await everything(redis, stream):
                answer = json.loads(fields[b"m"])
                self.replies[(stream, str(answer.get("commandId")))].append(answer)

    def of(self, item: object) -> list[Record]:
        return self.letters.get(id(item), [])

    def letter(self, partition: int, record: Record) -> None:
        source, reason = record.get(b"source", b""), record.get(b"reason", b"").decode(errors="replace")
        if source != self.keys.inbound(partition).encode():
            self.stray.append(f"a dead letter in partition {partition}'s stream from {source!r}: {reason[:160]}")
        elif b"entry_id" in record:
            item = self.published.get((source, record[b"entry_id"]))
            if isinstance(item, Hostile) and item.stage in ("decode", "commit"):
                original = {k[len(b"orig:") :]: v for k, v in record.items() if k.startswith(b"orig:")}
                if original != item.fields:
                    self.stray.append(f"the dead letter of {item.klass} entry {item.entry_id!r} lacks its original fields")
                self.letters[id(item)].append(record)
            else:
                self.stray.append(f"a dead letter of entry {record[b'entry_id']!r} ({describe(item)}): {reason[:200]}")
        else:
            raw = record.get(b"orig:m", b"")
            answer = as_object(raw)
            found: object | None
            if answer is not None and "ok" in answer:  # a run's refusal: it carries the error reply
                found = self.kernel.get(answer.get("commandId"))
            else:
                try:
                    found = self.by_digest.get(wire.digest(wire.decode(raw)))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    found = None
            if found is None:
                self.stray.append(f"a refusal of a message no hostile entry carries ({raw[:120]!r}): {reason[:200]}")
            else:
                self.letters[id(found)].append(record)


def describe(item: Item | None) -> str:
    if item is None:
        return "not published by the test"
    if isinstance(item, tuple):
        return f"runid-race member {item[0].members[item[1]][1]['commandId']}"
    if isinstance(item, Valid):
        return f"the valid {item.kind} {item.command_id}"
    return f"{item.klass} ({item.stage} stage)"


def named_reply(hostile: Hostile) -> tuple[str, str] | None:
    """The reply stream and commandId an undecodable entry names, if it names any."""
    value = as_object(hostile.fields[b"m"]) if b"m" in hostile.fields else None
    if value and isinstance(value.get("replyTo"), str) and isinstance(value.get("commandId"), str):
        return value["replyTo"], value["commandId"]
    return None


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    replied: Counter[str] = field(default_factory=Counter)
    wrong: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


# ---- the accounting ---------------------------------------------------------------------------


def account_hostile(corpus: Corpus, accounts: Accounts, tally: Tally) -> None:
    """One dead letter per hostile entry, with its class's reason; for a refusal at intake or by
    the run, an error reply of the expected type on the reply stream it names (a commandId reused
    several times is answered as many times); never an ok."""
    expected: Counter[tuple[str, str, str]] = Counter()
    for h in corpus.hostile:
        tally.sent[h.klass] += 1
        reasons = [r[b"reason"].decode(errors="replace") for r in accounts.of(h)]
        if len(reasons) == 1 and h.reason in reasons[0] and h.detail in reasons[0]:
            tally.dead[h.klass] += 1
        else:
            tally.wrong[h.klass].append(f"{h.stage}-stage entry {h.command_id or h.entry_id!r}: {len(reasons)} dead letters "
                                        f"{reasons[:2]!r}, expected one with {h.reason!r} {h.detail!r}")  # fmt: skip
        if h.stage in ("intake", "kernel") and h.reply_to is not None:
            assert h.command_id is not None and h.error_type is not None
            expected[(h.reply_to, h.command_id, h.error_type)] += 1
    for (stream, command_id, error_type), n in expected.items():
        answers = accounts.replies.get((stream, command_id), [])
        errors = [a for a in answers if a.get("ok") is False and a.get("errorType") == error_type]
        klass = stream.removeprefix(corpus.reply_prefix + "hostile-")
        tally.replied[klass] += min(n, len(errors))
        if len(errors) != n:
            got = [(a.get("ok"), a.get("errorType"), a.get("error")) for a in answers]
            tally.wrong[klass].append(f"{command_id}: {len(errors)} error replies {error_type} on {stream}, expected {n}: {got[:3]}")
    # a decode- or commit-stage entry naming one of our reply streams is never answered ok, at most once
    for h in corpus.hostile:
        named = named_reply(h) if h.stage in ("decode", "commit") else None
        answers = accounts.replies.get(named, []) if named else []
        tally.replied[h.klass] += len(answers)
        if any(a.get("ok") for a in answers) or len(answers) > 1:
            tally.wrong[h.klass].append(f"{h.command_id}: answered {[(a.get('ok'), a.get('error')) for a in answers][:3]}")


def account_races(corpus: Corpus, accounts: Accounts, runs: dict[str, asyncpg.Record], tally: Tally) -> list[Valid]:
    """Two executes raced for one fresh runId: one run (the winner's, answered ok once), and for
    the other an error reply RunIdInUseError and one dead letter. Returns the winners."""
    winners: list[Valid] = []
    for pair in corpus.races:
        tally.sent["runid-race"] += 1
        row = runs.get(pair.run_id)
        answers = [accounts.replies.get((pair.reply_to, message["commandId"]), []) for _, message in pair.members]
        oks = [k for k, a in enumerate(answers) if [x.get("ok") for x in a] == [True]]
        contacts = [message["contact"]["id"] for _, message in pair.members]
        owner = contacts.index(row["contact_id"]) if row is not None and row["contact_id"] in contacts else None
        if owner is not None:
            partition, message = pair.members[owner]
            winners.append(Valid("execute", partition, message, pair.reply_to, pair.run_id))
        if owner is None or oks != [owner]:
            tally.wrong["runid-race"].append(
                f"{pair.run_id}: the run is {row['contact_id'] if row else None}'s, yet {[contacts[k] for k in oks]} were "
                f"answered ok (replies {[[(x.get('ok'), x.get('runId')) for x in a] for a in answers]})"
            )  # fmt: skip
            continue
        loser = pair.members[1 - owner][1]
        if [e.get("errorType") for e in answers[1 - owner]] == ["RunIdInUseError"]:
            tally.replied["runid-race"] += 1
        reasons = [r[b"reason"].decode() for r in accounts.of(loser)]
        refusal = f"RunIdInUseError: runId {pair.run_id} is already in use by another run"
        if reasons == [refusal] and not accounts.of(pair.members[owner][1]):
            tally.dead["runid-race"] += 1
        else:
            tally.wrong["runid-race"].append(f"{pair.run_id}: the loser's dead letters {reasons}")
    return winners


async def check_valid(
    corpus: Corpus, accounts: Accounts, runs: dict[str, asyncpg.Record], winners: list[Valid], pool: asyncpg.Pool, client: Engine
) -> list[str]:
    """Every valid command applied once and answered ok once; nothing else applied at all."""
    problems: list[str] = []
    for v in [*corpus.valid, *winners]:
        answers = accounts.replies.get((v.reply_to, v.command_id), [])
        oks = [a for a in answers if a.get("ok")]
        if len(oks) != 1:
            problems.append(f"valid {v.kind} {v.command_id}: {len(oks)} ok replies ({answers[:3]})")
        elif v.kind == "execute" and (oks[0].get("runId"), oks[0].get("runs")) != (v.run_id, [v.run_id]):
            problems.append(f"valid execute {v.command_id}: answered {oks[0]}")
        elif v.kind == "event" and oks[0].get("runs") != [v.run_id]:
            problems.append(f"valid event {v.command_id}: answered {oks[0]}")
        if v.reply_to == corpus.valid_reply and len(answers) != len(oks):
            problems.append(f"valid {v.kind} {v.command_id}: error replies too: {answers}")
    enrolments = {v.run_id: v for v in [*corpus.valid, *winners] if v.kind == "execute"}
    for run_id, v in enrolments.items():
        row = runs.get(run_id)
        status = "pending" if v.message.get("startAt") else "waiting"
        expected = (v.contact_id, PLAN_ID, v.partition, status)
        if row is None or (row["contact_id"], row["plan_id"], row["partition"], row["status"]) != expected:
            problems.append(f"run {run_id} of {v.contact_id}: {dict(row) if row else None}, expected {status} in {v.partition}")
    if extra := sorted(set(runs) - set(enrolments)):
        problems.append(f"{len(extra)} runs no valid command asked for: {extra[:10]}")
    received = await client.audit.query(actions=["event.received"])  # opened: the table holds them sealed
    journaled = Counter((e.input or {}).get("eventId") for e in received)
    events = Counter(v.command_id for v in corpus.valid if v.kind == "event")
    if journaled != events:
        twice = sorted((k, journaled[k]) for k in events if journaled[k] != 1)
        problems.append(f"events journaled beyond the valid ones: {sorted((journaled - events).items())[:10]}; "
                        f"valid ones missing or journaled twice: {twice[:10]}")  # fmt: skip
    actions = {r["action"]: r["n"] for r in await pool.fetch("SELECT action, count(*) AS n FROM audit_log GROUP BY action")}
    if set(actions) - {"run.started", "step.entered", "wait.started", "event.received"}:
        problems.append(f"audit entries no valid command causes: {actions}")
    chains = await client.verify_audit_chains(sorted(enrolments))
    broken = [run_id for run_id, verdict in chains.items() if not verdict.valid]
    if broken or len(chains) != len(enrolments):
        problems.append(f"audit chains broken: {broken!r:.300} ({len(chains)} verified of {len(enrolments)})")
    for table in ("suppressions", "consents", "inbox", "outbox"):
        if n := await pool.fetchval(f"SELECT count(*) FROM {table}"):
            problems.append(f"{n} rows in {table}: a hostile entry was applied (no valid command makes any)")
    if n := await pool.fetchval("SELECT count(*) FROM contacts WHERE unsubscribed OR bounced"):
        problems.append(f"{n} contacts flagged by hostile events")
    return problems


async def check_keys(
    redis: aioredis.Redis, keys: Keys, published: Published, before: dict[bytes, tuple[bytes, bytes | None]]
) -> list[str]:
    """Outside the namespace, nothing changed; inside, no entry in an inbound stream the test did
    not write (but the manual clock's wakes), no channel action."""
    problems: list[str] = []
    after = await outside(redis, keys.ns)
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            problems.append(f"a key outside the namespace changed: {key!r} ({before.get(key, (None,))[0]!r} before, "
                            f"{after.get(key, (None,))[0]!r} after)")  # fmt: skip
    for p in range(PARTITIONS):
        stream = keys.inbound(p).encode()
        for entry_id, fields in await everything(redis, keys.inbound(p)):
            value = as_object(fields.get(b"m", b""))
            if (stream, entry_id) not in published and (value is None or value.get("type") != "wake"):
                problems.append(f"an entry the test did not publish in {stream!r}: {fields!r:.200}")
    async for key in redis.scan_iter(match=f"{keys.ns}:dispatch:*"):
        if await redis.type(key) == b"stream" and await redis.xlen(key):
            problems.append(f"channel actions in {key!r}: a hostile entry made the daemon send")
    return problems


async def check_daemon(daemon: Daemon, database: str, epochs: dict[int, int]) -> list[str]:
    """Alive, healthy and ready, the owner of every partition under the epoch it started with."""
    if not daemon.alive:
        return ["the daemon died"]
    problems: list[str] = []
    async with aiohttp.ClientSession() as http:
        for probe in ("healthz", "readyz"):
            async with http.get(f"http://127.0.0.1:{daemon.env['DEE_METRICS_PORT']}/{probe}") as answer:
                if answer.status != 200:
                    problems.append(f"/{probe} answered {answer.status}")
    moved = [(r["partition"], r["owner"], r["live"], r["epoch"]) for r in await lease_table(database)
             if (r["owner"], r["live"], r["epoch"]) != (INSTANCE, True, epochs[r["partition"]])]  # fmt: skip
    if moved:
        problems.append(f"partitions that changed hands or epoch under the corpus: {moved}")
    return problems


# ---- the test ---------------------------------------------------------------------------------


async def test_a_hostile_wire_corpus_is_refused_entry_by_entry_while_valid_traffic_is_applied_once(
    isolated: EngineConfig, daemon: Daemon
) -> None:
    config = isolated
    keys = Keys(config.namespace)
    started = time.monotonic()
    corpus = Corpus(config.namespace, PARTITIONS, SEED_USED)
    hostile_total = len(corpus.hostile) + len(corpus.races)
    assert hostile_total >= 10_000
    assert {h.klass for h in corpus.hostile} | {"runid-race"} == set(COUNTS)
    redis = aioredis.from_url(config.redis)
    pool = await asyncpg.create_pool(config.database, min_size=1, max_size=2)
    canaries: list[str] = []
    try:
        canaries = await plant_canaries(redis, corpus)
        before = await outside(redis, config.namespace)
        daemon.start()

        async def owns_all() -> bool:
            rows = await lease_table(config.database)
            return len(rows) == PARTITIONS and all(r["owner"] == INSTANCE and r["live"] for r in rows)

        await wait_for(owns_all, 30, f"{INSTANCE} to own the {PARTITIONS} partitions")
        epochs = {r["partition"]: r["epoch"] for r in await lease_table(config.database)}
        published: Published = {}
        phase_s: list[float] = []
        async with engine_client(config) as client:
            assert await client._backend.register(hold_plan()) == 1
            for n, items in enumerate(corpus.phases, 1):
                t0 = time.monotonic()
                await publish(redis, keys, items, published)
                await settle(redis, keys, client, pool, f"phase {n} ({len(items)} entries)")
                phase_s.append(time.monotonic() - t0)

            accounts = Accounts(corpus, published, keys)
            await accounts.read(redis)
            tally = Tally()
            account_hostile(corpus, accounts, tally)
            runs = {r["run_id"]: r for r in await pool.fetch("SELECT run_id, contact_id, plan_id, partition, status FROM runs")}
            winners = account_races(corpus, accounts, runs, tally)
            problems = accounts.stray[:SHOWN] + ([f"... {len(accounts.stray)} such dead letters"] if len(accounts.stray) > SHOWN else [])
            problems += await check_valid(corpus, accounts, runs, winners, pool, client)
            problems += await check_keys(redis, keys, published, before)
            problems += await check_daemon(daemon, config.database, epochs)
        if (code := await daemon.terminate()) != 0:
            problems.append(f"the daemon exited with {code} on SIGTERM")
        log = daemon.log()
        if "Traceback" in log:
            at = log.index("Traceback")
            problems.append(f"{log.count('Traceback')} tracebacks in the daemon's log; the first:\n{log[at - 200 : at + 1500]}")

        print(f"\nhostile corpus: seed {SEED_USED}, {hostile_total} hostile entries, {len(corpus.valid) + len(winners)} valid "
              f"commands, {PARTITIONS} partitions; phases {', '.join(f'{s:.1f} s' for s in phase_s)}; "
              f"{time.monotonic() - started:.1f} s in all")  # fmt: skip
        for klass in COUNTS:
            print(f"hostile corpus: {klass}: {tally.sent[klass]} sent, {tally.dead[klass]} dead-lettered, "
                  f"{tally.replied[klass]} error replies")  # fmt: skip
        print(f"hostile corpus: total: {tally.sent.total()} sent, {tally.dead.total()} dead-lettered, "
              f"{tally.replied.total()} error replies")  # fmt: skip
        assert tally.sent.total() == hostile_total
        for klass in COUNTS:
            if wrong := tally.wrong[klass]:
                problems.append(f"{klass}: {len(wrong)} of {tally.sent[klass]} not accounted for as they must be, e.g.\n    "
                                + "\n    ".join(wrong[:SHOWN]))  # fmt: skip
        assert not problems, "\n".join(problems)
    finally:
        if canaries:
            await redis.delete(*canaries)
        await pool.close()
        await redis.aclose()
