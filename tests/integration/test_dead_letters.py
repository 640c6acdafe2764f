"""Malformed and hostile stream entries (SPEC section 9): each lands in its partition's
dead-letter stream with the original fields (`orig:*`) and a reason, is acknowledged, and never
stops the partition; valid traffic interleaved with it is processed as usual.

Entries are XADDed straight to `Keys(ns).inbound(p)`, the way a publisher in another language
would; the valid ones carry a `replyTo` stream owned by the test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from dee import Duration, Engine, EngineConfig, create_plan, partition_for, steps, transitions
from dee.bus.streams import GROUP, Keys
from dee.ids import ulid
from dee.plan.model import Plan

PARTITIONS = 4
VARS = {"product": "DEE"}
WAIT_S = 20.0


@pytest.fixture
def quick() -> Plan:
    """One email, then the end: a run completes as soon as its send is delivered."""
    return create_plan(
        id="dead-letter-quick", name="Quick",
        steps=[steps.send_email(id="hello", template_id="tmpl_welcome", subject="Hello"), steps.end(id="done", outcome="done")],
        transitions=transitions.linear(),
    )  # fmt: skip


@pytest.fixture
async def redis(deployment: EngineConfig) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(deployment.redis)
    yield client
    await client.aclose()


def contacts_in(partition: int, n: int, prefix: str) -> list[str]:
    """`n` contact ids whose partition is `partition`."""
    found = [f"{prefix}-{i}" for i in range(10_000) if partition_for(f"{prefix}-{i}", PARTITIONS) == partition]
    return found[:n]


def person(cid: str) -> dict[str, Any]:
    return {"id": cid, "email": f"{cid}@acme.test", "attributes": {"first_name": cid}}


def execute(cid: str, reply_to: str, plan_id: str = "dead-letter-quick", version: int = 1) -> dict[str, Any]:
    return {
        "type": "execute", "commandId": f"cmd-{cid}", "replyTo": reply_to, "runId": ulid(),
        "planId": plan_id, "planVersion": version, "contact": person(cid), "variables": VARS,
    }  # fmt: skip


def m(message: dict[str, Any]) -> dict[bytes, bytes]:
    return {b"m": json.dumps(message).encode()}


async def publish(redis: aioredis.Redis, stream: str, entries: list[dict[bytes, bytes]]) -> list[bytes]:
    """XADD all entries atomically (MULTI/EXEC), so the worker reads them as one batch."""
    async with redis.pipeline(transaction=True) as pipe:
        for fields in entries:
            pipe.xadd(stream, fields)
        return [i if isinstance(i, bytes) else str(i).encode() for i in await pipe.execute()]


async def replies(redis: aioredis.Redis, stream: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Read `stream` until a reply for every command id in `wanted` arrived (or the deadline)."""
    got: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + WAIT_S
    last = "0-0"
    while not wanted <= set(got) and asyncio.get_running_loop().time() < deadline:
        for _, entries in await redis.xread({stream: last}, count=1000, block=200) or []:
            for entry_id, fields in entries:
                last = entry_id
                answer = json.loads(fields[b"m"])
                got[answer["commandId"]] = answer
    return got


async def settle(engine: Engine) -> None:
    """run_until_idle, bounded: a stopped partition shows as a timeout here, not a 2-minute hang."""
    try:
        await asyncio.wait_for(engine.run_until_idle(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"the deployment is not idle after {WAIT_S} s: a partition stopped") from None


async def dead_letters(redis: aioredis.Redis, keys: Keys) -> dict[int, list[dict[bytes, bytes]]]:
    return {p: [fields for _, fields in await redis.xrange(keys.dead(p))] for p in range(PARTITIONS)}


async def pending(redis: aioredis.Redis, keys: Keys) -> dict[int, int]:
    return {p: (await redis.xpending(keys.inbound(p), GROUP))["pending"] for p in range(PARTITIONS)}


async def test_malformed_entries_are_dead_lettered_while_valid_traffic_goes_on(
    deployment: EngineConfig, redis: aioredis.Redis, quick: Plan
) -> None:
    keys = Keys(deployment.namespace)
    reply_to = f"{deployment.namespace}:reply:test-{ulid()}"
    huge_id = os.urandom(100_000).hex()  # 200 KB of incompressible text as a commandId
    malformed: list[tuple[dict[bytes, bytes], str]] = [
        ({b"m": b"\xff\xfe this is { not json"}, "DecodeError"),
        (m({"type": "explode", "commandId": "bad-type"}), "`$.type`"),
        (m({"type": "pause", "commandId": "bad-missing"}), "missing required field `runId`"),
        (m({"type": "execute", "commandId": "bad-types", "runId": "r1", "planId": "dead-letter-quick",
            "planVersion": "one", "contact": {"id": "x"}}), "`$.planVersion`"),
        (m({"type": "cancel", "commandId": "bad-extra", "runId": "r1", "reason": "x", "evil": True}), "unknown field `evil`"),
        ({b"x": b"no m field here", b"y": b"2"}, "no 'm' field"),
        (m({"type": "consent", "commandId": huge_id, "contactId": contacts_in(6 % PARTITIONS, 1, "c-huge")[0],
            "channel": "email", "status": "granted", "source": "form"}), "refused at commit"),  # the 7th: partition 6 % 4
        (m({"type": "suppress", "commandId": "bad-wrong-literal", "contactId": "c", "level": "galactic",
            "reason": "r", "source": "s"}), "`$.level`"),
        ({b"m": b"[1, 2, 3]"}, "ValidationError"),
        ({b"m": b""}, "DecodeError"),
    ]
    async with Engine(deployment, scheduler=True) as engine:
        seed = await engine.execute(quick, person("seed"), VARS)  # registers the plan (version 1)
        valid: dict[int, list[str]] = {p: contacts_in(p, 6, f"ok{p}") for p in range(PARTITIONS)}
        expected: dict[int, list[tuple[dict[bytes, bytes], str, bytes]]] = {p: [] for p in range(PARTITIONS)}
        batches: dict[int, list[dict[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        good: list[dict[str, Any]] = []

        def good_one(cid: str) -> dict[bytes, bytes]:
            good.append(execute(cid, reply_to))
            return m(good[-1])

        for i, (fields, _) in enumerate(malformed):
            p = i % PARTITIONS
            batches[p].append(good_one(valid[p].pop()))
            batches[p].append(fields)
        for p in range(PARTITIONS):
            batches[p] += [good_one(cid) for cid in valid[p]]
        for p in range(PARTITIONS):
            ids = await publish(redis, keys.inbound(p), batches[p])
            bad = [(f, r) for i, (f, r) in enumerate(malformed) if i % PARTITIONS == p]
            bad_ids = [ids[2 * j + 1] for j in range(len(bad))]
            expected[p] = [(f, r, entry_id) for (f, r), entry_id in zip(bad, bad_ids, strict=True)]

        wanted = {g["commandId"] for g in good}
        assert len(wanted) == 4 * 6
        answers = await replies(redis, reply_to, wanted)
        assert sorted(answers) == sorted(wanted)
        assert [a["commandId"] for a in answers.values() if not a["ok"]] == []
        await settle(engine)

        dead = await dead_letters(redis, keys)
        for p in range(PARTITIONS):
            got = dead[p]
            assert len(got) == len(expected[p]), (p, [g.get(b"reason") for g in got])
            for record, (fields, reason, entry_id) in zip(got, expected[p], strict=True):
                assert {k: v for k, v in record.items() if k.startswith(b"orig:")} == {
                    b"orig:" + k: v for k, v in fields.items()
                }
                assert reason in record[b"reason"].decode(), (reason, record[b"reason"])
                assert (record[b"source"], record[b"entry_id"]) == (keys.inbound(p).encode(), entry_id)
        assert sum(len(v) for v in dead.values()) == len(malformed)
        assert await pending(redis, keys) == dict.fromkeys(range(PARTITIONS), 0)

        runs = await engine.list_runs(limit=100)
        assert runs.total == 1 + 4 * 6
        assert {(r.status, r.outcome) for r in runs.runs} == {("completed", "done")}
        assert sorted(a["runId"] for a in answers.values()) == sorted(g["runId"] for g in good)
        assert sorted(g["runId"] for g in good) == sorted(r.id for r in runs.runs if r.id != seed.id)


async def test_an_execute_for_an_unregistered_plan_gets_an_error_reply_and_leaves_a_trace(
    deployment: EngineConfig, redis: aioredis.Redis, quick: Plan
) -> None:
    keys = Keys(deployment.namespace)
    reply_to = f"{deployment.namespace}:reply:test-{ulid()}"
    async with Engine(deployment, scheduler=True) as engine:
        await engine.execute(quick, person("seed"), VARS)
        p = partition_for("ghost", PARTITIONS)
        unknown_plan = execute("ghost", reply_to, plan_id="no-such-plan")
        unknown_version = execute("ghost2", reply_to, version=99)
        ok = execute(contacts_in(p, 1, "fine")[0], reply_to)
        await publish(redis, keys.inbound(p), [m(unknown_plan), m(ok)])
        await publish(redis, keys.inbound(partition_for("ghost2", PARTITIONS)), [m(unknown_version)])
        answers = await replies(redis, reply_to, {unknown_plan["commandId"], unknown_version["commandId"], ok["commandId"]})
        assert {k: (a["ok"], a.get("errorType"), a.get("details")) for k, a in answers.items()} == {
            unknown_plan["commandId"]: (False, "UnknownPlanError", {"plan_id": "no-such-plan", "version": 1}),
            unknown_version["commandId"]: (False, "UnknownPlanError", {"plan_id": "dead-letter-quick", "version": 99}),
            ok["commandId"]: (True, None, None),
        }
        assert answers[ok["commandId"]]["runId"] == ok["runId"]
        await settle(engine)
        traces = {p: [(f[b"reason"].decode(), json.loads(f[b"orig:m"])["commandId"]) for f in letters]
                  for p, letters in (await dead_letters(redis, keys)).items() if letters}  # fmt: skip
        assert traces == {  # every refusal leaves a dead letter with its reason; the applied one none
            p: [("UnknownPlanError: plan no-such-plan v1 is not registered", unknown_plan["commandId"])],
            partition_for("ghost2", PARTITIONS): [("UnknownPlanError: plan dead-letter-quick v99 is not registered",
                                                   unknown_version["commandId"])],
        }  # fmt: skip
        assert await pending(redis, keys) == dict.fromkeys(range(PARTITIONS), 0)
        assert (await engine.list_runs(contact_id="ghost")).total == 0
        assert (await engine.get_run(ok["runId"])).status == "completed"


async def nul_scenario(
    deployment: EngineConfig, redis: aioredis.Redis, quick: Plan, hostile_of: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    """Publish the hostile entries `hostile_of(...)` builds, between valid executes, to partition 0;
    check the partition goes on; returns (dead-letter reasons, replies) by commandId."""
    keys = Keys(deployment.namespace)
    reply_to = f"{deployment.namespace}:reply:test-{ulid()}"
    async with Engine(deployment, scheduler=True) as engine:
        target, other = contacts_in(0, 2, "nul-target")
        await engine.execute(quick, person("seed"), VARS)
        slow = create_plan(
            id="dead-letter-slow", name="Slow",
            steps=[steps.wait(id="pause", duration=Duration(days=1)), steps.end(id="done", outcome="done")],
            transitions=transitions.linear(),
        )  # fmt: skip
        victim = await engine.execute(slow, person(target), VARS)  # waits: events reach it
        to_cancel = await engine.execute(slow, person(other), VARS)
        await settle(engine)
        hostile = hostile_of(reply_to, target, to_cancel.id)
        after = [execute(cid, reply_to) for cid in contacts_in(0, 3, "after")]
        stream = keys.inbound(0)
        half = (len(hostile) + 1) // 2
        await publish(redis, stream, [m(h) for h in hostile[:half]] + [m(after[0])])
        await publish(redis, stream, [m(h) for h in hostile[half:]] + [m(after[1])])
        await publish(redis, stream, [m(after[2])])
        answers = await replies(redis, reply_to, {a["commandId"] for a in after})
        assert {a["commandId"]: answers.get(a["commandId"], {}).get("ok") for a in after} == {
            a["commandId"]: True for a in after
        }
        await settle(engine)
        assert [(await engine.get_run(a["runId"])).status for a in after] == ["completed"] * 3
        dead = {
            json.loads(f[b"orig:m"])["commandId"]: f[b"reason"].decode() for f in (await dead_letters(redis, keys))[0]
        }
        answers = await replies(redis, reply_to, {h["commandId"] for h in hostile} - set(dead))
        fate = {h["commandId"]: "dead" if h["commandId"] in dead else "replied" if h["commandId"] in answers else "lost"
                for h in hostile}  # fmt: skip
        assert [cid for cid, f in fate.items() if f == "lost"] == [], (fate, dead)
        assert await pending(redis, keys) == dict.fromkeys(range(PARTITIONS), 0)
        # the waiting run is still alive and its chain intact; the partition still moves time on
        await engine.advance_clock(86_400)
        view = await engine.get_run(victim.id)
        assert (view.status, view.outcome) == ("completed", "done")
        assert (await engine.verify_audit_chain(victim.id)).valid is True
        assert (await engine.verify_audit_chain(to_cancel.id)).valid is True
        return dead, answers


NUL = "a\u0000b"


async def test_nul_characters_in_messages_never_stop_the_partition(
    deployment: EngineConfig, redis: aioredis.Redis, quick: Plan
) -> None:
    """Postgres text cannot hold U+0000: wherever it hides, the entry is dead-lettered or
    handled (a reply), and the partition keeps processing what comes after it."""

    def hostile(reply_to: str, target: str, run_id: str) -> list[dict[str, Any]]:
        event = {"type": "event", "replyTo": reply_to, "eventType": "email.opened", "contactId": target}
        return [
            {**event, "commandId": "nul-data", "data": {"note": NUL}},
            {**event, "commandId": "nul-type", "eventType": NUL},
            {**event, "commandId": "nul-message", "messageId": NUL},
            {**event, "commandId": "nul-occurred", "occurredAt": NUL},
            {**event, "commandId": f"nul-id{NUL}"},
            {**event, "commandId": "nul-contact-id", "contactId": f"x{NUL}"},
            {**execute(target, reply_to), "commandId": "nul-contact", "contact": person(f"x{NUL}")},
            {**execute(target, reply_to), "commandId": "nul-variables", "variables": {"product": NUL}},
            {"type": "consent", "commandId": "nul-evidence", "replyTo": reply_to, "contactId": target,
             "channel": "email", "status": "granted", "source": "form", "evidence": {"ip": NUL}},
            {"type": "suppress", "commandId": "nul-suppress", "replyTo": reply_to, "contactId": f"s{NUL}",
             "level": "global", "reason": NUL, "source": "x"},
            {"type": "cancel", "commandId": "nul-reason", "replyTo": reply_to, "runId": run_id, "reason": NUL},
        ]  # fmt: skip

    dead, answers = await nul_scenario(deployment, redis, quick, hostile)
    assert "nul-reason" in answers or "nul-reason" in dead


async def test_a_nul_in_an_events_step_id_never_stops_the_partition(
    deployment: EngineConfig, redis: aioredis.Redis, quick: Plan
) -> None:
    """The step id of an event reaches `audit_log.step_id` only when the run processes it, after
    the entry was accepted and acknowledged: it must not wedge the partition's ticks."""

    def hostile(reply_to: str, target: str, run_id: str) -> list[dict[str, Any]]:
        return [{"type": "event", "commandId": "nul-step", "replyTo": reply_to, "eventType": "email.opened",
                 "contactId": target, "stepId": NUL}]  # fmt: skip

    await nul_scenario(deployment, redis, quick, hostile)
