"""What the Engine facade needs from a backend: storage, scheduling and the clock.

Two implementations: `dee.inmemory.MemoryBackend` (everything in this process) and
`dee.client.DaemonBackend` (Postgres + Redis Streams + the partition daemons). The facade
holds everything that is the same for both: argument handling, replay, timelines, debugging.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from dee.kernel.audit import AuditEntry
from dee.kernel.contact import Contact
from dee.kernel.replay import ReplayResult
from dee.plan.compiled import CompiledPlan
from dee.plan.model import Plan
from dee.runs import BulkResult, ConsentRecord, ExecutionRun, RunPage, Suppression


class Backend(Protocol):
    current_tick: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def register(self, plan: Plan) -> int: ...
    async def compiled(self, plan_id: str, version: int) -> CompiledPlan: ...
    async def execute(
        self, plan_id: str, version: int, contact: Contact, variables: dict[str, Any],
        start_at: int | None, idempotency_key: str | None,
    ) -> str: ...  # fmt: skip
    async def bulk_execute(
        self, plan_id: str, version: int, contacts: list[Contact], variables: dict[str, Any], batch_size: int
    ) -> BulkResult: ...
    async def get_run(self, run_id: str) -> ExecutionRun: ...
    async def list_runs(
        self, statuses: list[str] | None, plan_id: str | None, contact_id: str | None,
        started_after: int | datetime | None, started_before: int | datetime | None, limit: int, offset: int,
    ) -> RunPage: ...  # fmt: skip
    async def command(self, run_id: str, kind: str, reason: str = "") -> None: ...
    async def bulk_cancel(self, filters: dict[str, Any], reason: str) -> int: ...
    async def ingest_event(
        self, type: str, contact_id: str, data: dict[str, Any], occurred_at: str | None,
        run_id: str | None, step_id: str | None, event_id: str | None, message_id: str | None,
    ) -> list[str]: ...  # fmt: skip
    async def suppress(self, entry: Suppression) -> int: ...
    async def record_consent(self, record: ConsentRecord) -> None: ...
    async def audit_entries(self, run_id: str) -> list[AuditEntry]: ...
    async def audit_query(
        self, run_id: str | None, actions: list[str] | None, from_tick: int | None, to_tick: int | None
    ) -> list[AuditEntry]: ...
    async def chain_head(self, run_id: str) -> tuple[int, str]: ...
    async def record_replay(self, run_id: str, result: ReplayResult) -> None: ...
    async def advance_clock(self, ticks: int) -> None: ...
    async def run_until_idle(self) -> None: ...
