"""The client side of the wire, shared by both backends: every write is a wire message to the
partition of its contact (or run), answered after the partition committed it.

`DaemonBackend` carries the messages over Redis Streams to the daemons; `MemoryBackend` hands
them to in-process partitions running the same shell rules. What a write means (which message,
which partition, how the answer is read) is written here once.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dee.backends.numbers import suppress_numbers
from dee.bus import messages as wire
from dee.config import EngineConfig
from dee.errors import EngineUnavailableError, InvalidTransitionError, RunNotFoundError, rebuild_error
from dee.ids import MonotonicUlid, ulid
from dee.kernel.contact import Contact
from dee.kernel.replay import ReplayResult
from dee.plugin.contracts import ChannelAdapter
from dee.records import BulkError, BulkResult, ConsentRecord, Erasure, NumberImport, RunPage, Suppression
from dee.routing import partition_for
from dee.shell.numbers import Listed, Listing

# a command refused because its run ended meanwhile: bulk_cancel skips it, not counted
ENDED_MEANWHILE = (InvalidTransitionError, RunNotFoundError)


class Publisher(ABC):
    config: EngineConfig
    partitions: int
    reply_stream: str | None

    def __init__(self) -> None:
        self.new_run_id = MonotonicUlid()

    # ---- what a backend provides --------------------------------------------------------
    @abstractmethod
    async def send(self, partition: int, message: wire.Inbound, timeout: float | None = None) -> wire.Reply:
        """Deliver a message to its partition and return the partition's reply after commit."""

    @abstractmethod
    async def partition_of_run(self, run_id: str) -> int:
        """The partition a run lives in; RunNotFoundError when there is no such run."""

    @abstractmethod
    async def list_runs(
        self, statuses: list[str] | None, plan_id: str | None, contact_id: str | None,
        started_after: int | datetime | None, started_before: int | datetime | None, limit: int, offset: int,
    ) -> RunPage: ...  # fmt: skip

    @abstractmethod
    async def now_tick(self) -> int:
        """The deployment's current tick."""

    @abstractmethod
    async def list_numbers(self, listing: Listing, numbers: Sequence[str], tick: int) -> Listed:
        """List E.164 numbers at `tick` and find the contacts enrolled with them (one step:
        race-free against enrolments, see `dee.stores.postgres.numbers`)."""

    @property
    @abstractmethod
    def adapters(self) -> Mapping[str, ChannelAdapter]:
        """The channel adapters this process sends with (a replay with dry_run=False)."""

    # ---- request and reply ----------------------------------------------------------------
    async def ask(self, partition: int, message: wire.Inbound) -> wire.Reply:
        reply = await self.send(partition, message)
        if not reply.ok:
            raise rebuild_error(reply.error_type or "DeeError", reply.error or "", reply.details)
        return reply

    def _common(self) -> dict[str, Any]:
        return {"command_id": ulid(), "reply_to": self.reply_stream}

    # ---- writes ------------------------------------------------------------------------
    async def execute(
        self, plan_id: str, version: int, contact: Contact, variables: dict[str, Any],
        start_at: int | None, idempotency_key: str | None,
    ) -> str:  # fmt: skip
        message = wire.Execute(
            **self._common(), run_id=self.new_run_id(), plan_id=plan_id, plan_version=version, contact=contact,
            variables=variables, start_at=start_at, idempotency_key=idempotency_key,
        )  # fmt: skip
        reply = await self.ask(partition_for(contact.id, self.partitions), message)
        assert reply.run_id is not None
        return reply.run_id

    async def bulk_execute(
        self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any], batch_size: int
    ) -> BulkResult:
        return await self._bulk_messages(plan_id, version, contacts, variables, batch_size)

    async def _bulk_messages(
        self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any], batch_size: int
    ) -> BulkResult:
        """One `executeBatch` message per partition and chunk, all in flight at once; a chunk a
        partition refused or did not answer is reported per contact, never silently dropped."""
        by_partition: dict[int, list[Contact]] = defaultdict(list)
        for contact in contacts:
            by_partition[partition_for(contact.id, self.partitions)].append(contact)
        chunk = max(batch_size, 1)
        batches = [(p, group[i : i + chunk]) for p, group in sorted(by_partition.items()) for i in range(0, len(group), chunk)]

        async def one(partition: int, group: list[Contact]) -> tuple[list[Contact], wire.Reply | Exception]:
            message = wire.ExecuteBatch(
                **self._common(), plan_id=plan_id, plan_version=version, variables=variables,
                items=[wire.BatchItem(self.new_run_id(), c) for c in group],
            )  # fmt: skip
            timeout = max(self.config.client.reply_timeout_ms / 1000, len(group) / 100)
            try:
                return group, await self.send(partition, message, timeout=timeout)
            except EngineUnavailableError as exc:
                return group, exc

        created, skipped, errors, ids = 0, 0, [], []
        for group, reply in await asyncio.gather(*(one(p, g) for p, g in batches)):
            if isinstance(reply, Exception) or not reply.ok:
                why = str(reply) if isinstance(reply, Exception) else f"{reply.error_type}: {reply.error}"
                errors += [BulkError(c.id, why) for c in group]
                continue
            created += len(reply.runs)
            skipped += len(reply.skipped)
            ids += reply.runs
        return BulkResult(created, skipped, errors, ids)

    async def command(self, run_id: str, kind: str, reason: str = "") -> None:
        common = {**self._common(), "run_id": run_id}
        message: wire.Inbound
        if kind == "pause":
            message = wire.Pause(**common)
        elif kind == "resume":
            message = wire.Resume(**common)
        elif kind == "retry":
            message = wire.Retry(**common)
        elif kind == "cancel":
            message = wire.Cancel(**common, reason=reason)
        else:
            raise ValueError(f"unknown command {kind!r}")
        await self.ask(await self.partition_of_run(run_id), message)

    async def bulk_cancel(self, filters: dict[str, Any], reason: str) -> int:
        """Cancel every run matching the filters; returns how many were cancelled. A run that
        ended meanwhile is not counted; any other failure (a partition that did not answer) is
        raised once every other cancel has been tried, so a partial result is never a count."""
        page = await self.list_runs(
            filters.get("status"), filters.get("plan_id"), filters.get("contact_id"),
            filters.get("started_after"), filters.get("started_before"), 10**12, 0,
        )  # fmt: skip
        results = await asyncio.gather(*(self.command(r.id, "cancel", reason) for r in page.runs), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ENDED_MEANWHILE)]
        if failures:
            raise failures[0]
        return sum(1 for r in results if r is None)

    async def ingest_event(
        self, type: str, contact_id: str, data: dict[str, Any], occurred_at: str | None,
        run_id: str | None, step_id: str | None, event_id: str | None, message_id: str | None,
    ) -> list[str]:  # fmt: skip
        message = wire.Event(
            command_id=event_id or ulid(), reply_to=self.reply_stream, event_type=type, contact_id=contact_id,
            data=data, occurred_at=occurred_at, run_id=run_id, step_id=step_id, message_id=message_id,
        )  # fmt: skip
        return (await self.ask(partition_for(contact_id, self.partitions), message)).runs

    async def suppress(self, entry: Suppression) -> int:
        message = wire.Suppress(
            **self._common(), contact_id=entry.contact_id, level=entry.level, reason=entry.reason,
            source=entry.source, channel=entry.channel, plan_id=entry.plan_id,
        )  # fmt: skip
        return len((await self.ask(partition_for(entry.contact_id, self.partitions), message)).runs)

    async def suppress_numbers(self, numbers: Iterable[str], listing: Listing) -> NumberImport:
        return await suppress_numbers(self, numbers, listing)

    async def record_consent(self, record: ConsentRecord) -> None:
        message = wire.Consent(
            **self._common(), contact_id=record.contact_id, channel=record.channel, status=record.status,
            source=record.source, expires_tick=record.expires_tick, evidence=record.evidence,
        )  # fmt: skip
        await self.ask(partition_for(record.contact_id, self.partitions), message)

    async def erase_contact(self, contact_id: str, reason: str) -> Erasure:
        message = wire.EraseContact(**self._common(), contact_id=contact_id, reason=reason)
        reply = await self.ask(partition_for(contact_id, self.partitions), message)
        return Erasure(contact_id, bool(reply.details.get("alreadyErased")), int(reply.details.get("runs", 0)), list(reply.runs))

    async def record_replay(self, run_id: str, result: ReplayResult) -> None:
        """Re-issue the replay's channel actions with their original keys (adapters answer from
        what they recorded, nothing is sent twice) and journal the verdict in the run's chain."""
        for request in result.dispatches:
            await self.adapters[request.channel].send(request)
        message = wire.ReplayVerdict(
            **self._common(), run_id=run_id, identical=result.identical,
            fields=[f"{d.step}.{d.field}" for d in result.diffs], reissued=len(result.dispatches),
        )  # fmt: skip
        await self.ask(await self.partition_of_run(run_id), message)
