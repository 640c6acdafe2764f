"""Plan versions in Postgres, and the process-wide cache of compiled plans."""

from __future__ import annotations

import asyncpg
import msgspec

from dee.plan.compiled import CompiledPlan
from dee.plan.files import plan_from_document
from dee.plan.model import Plan
from dee.plan.prepare import prepare_plan
from dee.plugin.contracts import TemplateStore
from dee.plugin.manager import PluginManager

REGISTER_LOCK = 0x0DEE_0002


async def register_plan(conn: asyncpg.Connection, plan: Plan) -> int:
    """The version of this content under this plan id: existing, or the next number."""
    definition = msgspec.json.encode(plan.content())
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", REGISTER_LOCK, plan.id)
        version = await conn.fetchval(
            "SELECT version FROM plans WHERE plan_id = $1 AND checksum = $2", plan.id, plan.checksum
        )
        if version is None:
            version = await conn.fetchval(
                "INSERT INTO plans (plan_id, version, checksum, definition) "
                "SELECT $1, coalesce(max(version), 0) + 1, $2, $3 FROM plans WHERE plan_id = $1 RETURNING version",
                plan.id, plan.checksum, definition,
            )  # fmt: skip
    return int(version)


class PlanCache:
    """Compiled plans by (id, version), loaded from Postgres once per process. A registered
    version passed every check when it was registered and never changes, so it is compiled
    without asking the template store again: a process without templates can read runs."""

    def __init__(self, plugins: PluginManager, templates: TemplateStore) -> None:
        self.plugins = plugins
        self.templates = templates
        self._compiled: dict[tuple[str, int], CompiledPlan] = {}

    def put(self, plan: Plan, version: int) -> CompiledPlan:
        key = (plan.id, version)
        if key not in self._compiled:
            self._compiled[key] = prepare_plan(msgspec.structs.replace(plan, version=version), self.plugins.step_types(), None)
        return self._compiled[key]

    async def get(self, conn: asyncpg.Connection, plan_id: str, version: int) -> CompiledPlan:
        key = (plan_id, version)
        if key not in self._compiled:
            raw = await conn.fetchval("SELECT definition FROM plans WHERE plan_id = $1 AND version = $2", plan_id, version)
            if raw is None:
                raise KeyError(f"plan {plan_id} v{version} is not registered")
            self.put(plan_from_document(msgspec.json.decode(raw)), version)
        return self._compiled[key]
