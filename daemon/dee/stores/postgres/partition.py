"""`PostgresPartitionStore`: the shell's `PartitionStore` on one connection, inside the tick
transaction of a partition's single writer (or of the client's bulk enrolment)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import msgspec

from dee.bus import messages as wire
from dee.kernel.audit import AuditRow
from dee.kernel.inputs import AnyInput
from dee.kernel.policy import PolicyFacts, SentMark
from dee.kernel.state import RunState
from dee.plan.compiled import CompiledPlan
from dee.records import ConsentRecord, Suppression
from dee.shell.numbers import Listing
from dee.shell.store import EnrolmentFacts, KeyStatus, NewRun, OutboxItem, Queued, policy_facts
from dee.stores.postgres import contact_keys, numbers, rows
from dee.stores.postgres.numbers import CHANNEL_SCOPED, EVERY_CHANNEL
from dee.stores.postgres.plans import PlanCache

_decode_reply = msgspec.json.Decoder(wire.Reply).decode
FLAGS = ("unsubscribed", "bounced")  # the contact-level flags (column names)


class PostgresPartitionStore:
    def __init__(self, conn: asyncpg.Connection, partition: int, plans: PlanCache, epoch_ms: int) -> None:
        self.conn = conn
        self.partition = partition
        self.plans = plans
        self.epoch_ms = epoch_ms
        self._starts: dict[str, int] = {}  # start tick of each run this transaction read or made: its audit rows' partition

    async def plan(self, plan_id: str, version: int) -> CompiledPlan:
        return await self.plans.get(self.conn, plan_id, version)

    # ---- dedupe and replies --------------------------------------------------------------
    async def claim(self, commands: Sequence[tuple[str, bytes]], tick: int) -> tuple[set[str], dict[str, bytes]]:
        ids = [c for c, _ in commands]
        found = await self.conn.fetch(
            "INSERT INTO received (message_id, partition, tick, digest) SELECT u.id, $3, $4, u.digest "
            "FROM unnest($1::text[], $2::bytea[]) AS u(id, digest) ON CONFLICT DO NOTHING RETURNING message_id",
            ids, [d for _, d in commands], self.partition, tick,
        )  # fmt: skip
        fresh = {r["message_id"] for r in found}
        if len(fresh) == len(ids):
            return fresh, {}
        seen = await self.conn.fetch(
            "SELECT message_id, digest FROM received WHERE message_id = ANY($1::text[]) AND digest IS NOT NULL",
            [c for c in ids if c not in fresh],
        )  # fmt: skip
        return fresh, {r["message_id"]: bytes(r["digest"]) for r in seen}

    async def replies_of(self, command_ids: Sequence[str]) -> dict[str, wire.Reply]:
        found = await self.conn.fetch(
            "SELECT message_id, reply FROM received WHERE message_id = ANY($1::text[]) AND reply IS NOT NULL",
            list(command_ids),
        )  # fmt: skip
        return {r["message_id"]: _decode_reply(r["reply"]) for r in found}

    async def store_replies(self, replies: Sequence[wire.Reply]) -> None:
        if replies:
            await self.conn.execute(
                "UPDATE received SET reply = u.reply FROM unnest($1::text[], $2::bytea[]) AS u(id, reply) "
                "WHERE message_id = u.id",
                [r.command_id for r in replies], [wire.encode(r) for r in replies],
            )  # fmt: skip

    # ---- what messages address --------------------------------------------------------------
    async def owners_of(self, run_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        found = await self.conn.fetch("SELECT run_id, partition, contact_id FROM runs WHERE run_id = ANY($1::text[])", list(run_ids))
        return {r["run_id"]: (r["partition"], r["contact_id"]) for r in found}

    async def active_runs(self, contact_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        active: dict[str, list[tuple[str, str]]] = {}
        for r in await self.conn.fetch(
            f"SELECT contact_id, run_id, plan_id FROM runs WHERE partition = $1 AND contact_id = ANY($2::text[]) "
            f"AND status NOT IN {rows.TERMINAL_SQL} ORDER BY run_id", self.partition, list(contact_ids),
        ):  # fmt: skip
            active.setdefault(r["contact_id"], []).append((r["run_id"], r["plan_id"]))
        return active

    async def run_by_key(self, idempotency_key: str) -> str | None:
        found: str | None = await self.conn.fetchval("SELECT run_id FROM runs WHERE idempotency_key = $1", idempotency_key)
        return found

    # ---- contact-level records ------------------------------------------------------------
    async def enrolment_facts(self, plan_id: str, contact_ids: Sequence[str]) -> EnrolmentFacts:
        ids = list(contact_ids)
        enrolled = {
            r["contact_id"]: r["run_id"]
            for r in await self.conn.fetch(
                f"SELECT contact_id, run_id FROM runs WHERE plan_id = $1 AND contact_id = ANY($2::text[]) "
                f"AND status NOT IN {rows.TERMINAL_SQL}", plan_id, ids)
        }  # fmt: skip
        suppressed = {
            r["contact_id"]: (r["level"], r["reason"])
            for r in await self.conn.fetch(
                "SELECT DISTINCT ON (contact_id) contact_id, level, reason FROM suppressions WHERE contact_id = ANY($1::text[]) "
                f"AND ({EVERY_CHANNEL} OR (level = 'plan' AND plan_id = $2)) ORDER BY contact_id, id", ids, plan_id)
        }  # fmt: skip
        flags = {
            r["contact_id"]: (r["unsubscribed"], r["bounced"])
            for r in await self.conn.fetch(
                "INSERT INTO contacts (contact_id, partition) SELECT unnest($1::text[]), $2 ON CONFLICT (contact_id) "
                "DO UPDATE SET contact_id = EXCLUDED.contact_id RETURNING contact_id, unsubscribed, bounced",
                sorted(set(ids)), self.partition)
        }  # fmt: skip
        return EnrolmentFacts(enrolled, suppressed, flags, await self.policy_facts(ids))

    async def listed_numbers(self, phones: Sequence[tuple[str, str]]) -> dict[str, list[Listing]]:
        return await numbers.record_phones(self.conn, self.partition, phones)

    async def flag_contact(self, contact_id: str, flag: str, tick: int) -> None:
        if flag not in FLAGS:
            raise ValueError(f"unknown contact flag {flag!r}")
        await self.conn.execute(
            f"INSERT INTO contacts (contact_id, partition, {flag}, updated_tick) VALUES ($1, $2, true, $3) "
            f"ON CONFLICT (contact_id) DO UPDATE SET {flag} = true, updated_tick = $3",
            contact_id, self.partition, tick,
        )  # fmt: skip

    async def add_suppression(self, suppression: Suppression) -> None:
        s = suppression
        await self.conn.execute(
            "INSERT INTO suppressions (contact_id, level, reason, source, channel, plan_id, tick) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)", s.contact_id, s.level, s.reason, s.source, s.channel, s.plan_id, s.tick,
        )  # fmt: skip

    async def policy_facts(self, contact_ids: Sequence[str]) -> dict[str, PolicyFacts]:
        rows = await self.conn.fetch(
            "SELECT id, contact_id, channel, status, source, tick, expires_tick FROM consents WHERE contact_id = ANY($1::text[]) "
            "UNION ALL SELECT id, contact_id, channel, NULL, '', tick, NULL FROM suppressions "
            f"WHERE {CHANNEL_SCOPED} AND contact_id = ANY($1::text[]) ORDER BY contact_id, tick, id",
            list(contact_ids),
        )  # fmt: skip
        consents: dict[str, list[ConsentRecord]] = {}
        channels: dict[str, list[str]] = {}
        for r in rows:
            if r["status"] is None:
                channels.setdefault(r["contact_id"], []).append(r["channel"])
            else:
                consents.setdefault(r["contact_id"], []).append(ConsentRecord(
                    contact_id=r["contact_id"], channel=r["channel"], status=r["status"], source=r["source"], tick=r["tick"],
                    expires_tick=r["expires_tick"]))  # fmt: skip
        return {cid: policy_facts(consents.get(cid, ()), channels.get(cid, ())) for cid in sorted(consents.keys() | channels.keys())}

    async def add_consent(self, consent: ConsentRecord) -> None:
        c = consent
        await self.conn.execute(
            "INSERT INTO consents (contact_id, channel, status, source, tick, expires_tick, evidence) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            c.contact_id, c.channel, c.status, c.source, c.tick, c.expires_tick, wire.encode_json(c.evidence),
        )  # fmt: skip

    async def record_sends(self, sends: Sequence[tuple[str, SentMark]], forget_before: int) -> None:
        await self.conn.execute("DELETE FROM contact_sends WHERE partition = $1 AND tick < $2", self.partition, forget_before)
        if sends:
            await self.conn.executemany(
                "INSERT INTO contact_sends (message_id, partition, contact_id, channel, plan_id, tick) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
                [(m.message_id, self.partition, contact_id, m.channel, m.plan_id, m.tick) for contact_id, m in sends],
            )  # fmt: skip

    async def recent_sends(self, contact_ids: Sequence[str], since_tick: int) -> dict[str, tuple[SentMark, ...]]:
        found: dict[str, list[SentMark]] = {}
        for r in await self.conn.fetch(
            "SELECT contact_id, tick, channel, message_id, plan_id FROM contact_sends "
            "WHERE contact_id = ANY($1::text[]) AND tick >= $2",
            list(contact_ids), since_tick,
        ):  # fmt: skip
            found.setdefault(r["contact_id"], []).append(SentMark(r["tick"], r["channel"], r["message_id"], r["plan_id"]))
        return {contact_id: tuple(sorted(marks, key=lambda m: (m.tick, m.message_id))) for contact_id, marks in sorted(found.items())}

    # ---- runs and their inputs ----------------------------------------------------------
    async def add_runs(self, runs: Sequence[NewRun], audit: Sequence[AuditRow]) -> set[str]:
        records = [rows.run_record(run.state, self.partition, run.idempotency_key) for run in runs]
        self._starts.update((run.state.run_id, run.state.start_tick) for run in runs)
        return await rows.insert_new_runs(self.conn, records, audit)

    async def queue(self, inputs: Sequence[Queued]) -> None:
        if not inputs:
            return
        encoded: dict[int, bytes] = {}  # an event for several runs is encoded once

        def body(value: AnyInput) -> bytes:
            key = id(value)
            if key not in encoded:
                encoded[key] = rows.encode_input(value)
            return encoded[key]

        await rows.add_inbox(self.conn, self.partition, [
            (q.run_id, q.input.tick, body(q.input), q.reply_to, q.command_id) for q in inputs
        ])  # fmt: skip

    async def due(self, tick: int, cap: int, fresh: Sequence[str]) -> tuple[list[RunState], set[str]]:
        states, queued = await rows.due_runs(self.conn, self.partition, tick, cap, fresh)
        self._starts.update((state.run_id, state.start_tick) for state in states)
        return states, set(queued)

    async def queued(self, run_ids: Sequence[str]) -> list[tuple[int, Queued]]:
        return [
            (r["seq"], Queued(r["run_id"], rows.decode_input(r["body"]), r["reply_to"], r["message_id"]))
            for r in await rows.inbox_of(self.conn, self.partition, run_ids)
        ]

    async def consume(self, seqs: Sequence[int]) -> None:
        await rows.delete_inbox(self.conn, seqs)

    async def save_runs(self, states: Sequence[RunState]) -> None:
        await rows.update_runs(self.conn, states)

    async def runs_of_contact(self, contact_id: str) -> list[str]:
        found = await self.conn.fetch(
            f"SELECT run_id FROM runs WHERE contact_id = $1 AND status NOT IN {rows.TERMINAL_SQL} ORDER BY run_id", contact_id
        )
        return [r["run_id"] for r in found]

    async def contact_runs(self, contact_id: str) -> list[RunState]:
        found = await self.conn.fetch(
            "SELECT state FROM runs WHERE contact_id = $1 AND partition = $2 ORDER BY run_id", contact_id, self.partition
        )
        return [rows.decode_state(r["state"]) for r in found]

    # ---- contact keys and erasure (dee.privacy) ------------------------------------------
    async def contact_keys(self, contact_ids: Sequence[str]) -> dict[str, bytes]:
        return await contact_keys.contact_keys(self.conn, contact_ids)

    async def add_contact_keys(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        return await contact_keys.add_contact_keys(self.conn, self.partition, wrapped)

    async def key_status(self, contact_id: str) -> KeyStatus:
        return await contact_keys.key_status(self.conn, contact_id)

    async def forget_contact(self, contact_id: str, run_ids: Sequence[str], tick: int, reason: str) -> None:
        await contact_keys.forget_contact(self.conn, self.partition, contact_id, run_ids, tick, reason)

    # ---- what a tick wrote --------------------------------------------------------------
    async def append_audit(self, audit: Sequence[AuditRow]) -> None:
        """The rows of runs this transaction advanced (read by `due`); any other run's start is
        read from its row."""
        unknown = sorted({row.run_id for row in audit} - self._starts.keys())
        if unknown:
            found = await self.conn.fetch("SELECT run_id, start_tick FROM runs WHERE run_id = ANY($1::text[])", unknown)
            self._starts.update((r["run_id"], r["start_tick"]) for r in found)
        await rows.copy_audit(self.conn, audit, self._starts)

    async def add_outbox(self, items: Sequence[OutboxItem]) -> list[int]:
        return await rows.add_outbox(self.conn, self.partition, items)
