"""`Replayer`: replay as an entry point of its own, like temporalio's.

Built once from a deployment's configuration, its plugins and its templates, with a way to look
plan versions up (the engine's store, a bench worker's connection, or the plan inside an
export file). It re-executes runs from their audit entries through today's kernel and compares
(`dee.kernel.replay`). `Engine.replay`, `dee runs replay`, `dee simulate` and `dee bench` all go
through it; `replay_export` needs nothing but a `dee.audit-export/1` file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

import msgspec

from dee.config import EngineConfig
from dee.errors import AuditChainError
from dee.kernel.audit import AuditEntry
from dee.kernel.erasure import is_erased
from dee.kernel.inputs import AnyInput, Start
from dee.kernel.machine import KernelEnv
from dee.kernel.replay import EntryLike, ReplayResult, replay_entries, start_of
from dee.plan.compiled import CompiledPlan
from dee.plan.files import plan_from_document
from dee.plan.prepare import prepare_plan
from dee.plan.spec import TemplateStore
from dee.plugin.manager import PluginManager
from dee.shell.envs import KernelEnvs, PlanLookup

EXPORT_FORMAT = "dee.audit-export/1"


class Replayer:
    def __init__(self, config: EngineConfig, plugins: PluginManager, templates: TemplateStore, plans: PlanLookup) -> None:
        self.config = config
        self.plugins = plugins
        self.plans = plans
        self.envs = KernelEnvs(config, templates, plugins.policy_gates(config).values())

    async def env_for(self, start: Start) -> KernelEnv:
        return await self.envs.get(start.plan_id, start.plan_version, self.plans)

    async def replay_run(self, entries: Sequence[EntryLike], inputs: Sequence[AnyInput] | None = None) -> ReplayResult:
        """Replay one run from its entries; `inputs` replaces the recorded inputs (a what-if)."""
        env = await self.env_for(start_of(entries))  # replay_entries decodes the other inputs
        return replay_entries(entries, lambda _start: env, inputs)

    async def replay_runs(self, chains: AsyncIterable[Sequence[EntryLike]]) -> AsyncIterator[tuple[str, ReplayResult]]:
        """Replay every chain as it arrives: (run id, result) pairs, in the order given."""
        async for entries in chains:
            yield start_of(entries).run_id, await self.replay_run(entries)

    async def replay_export(self, document: bytes | str | os.PathLike[str]) -> ReplayResult:
        """Replay a run from a `dee.audit-export/1` document (bytes, or a file's path) alone:
        its entries and the plan version they ran, with today's code and templates."""
        raw = document if isinstance(document, bytes) else await asyncio.to_thread(Path(document).read_bytes)
        try:
            export = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise AuditChainError(f"not an audit export: {exc}") from exc
        if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
            raise AuditChainError(f"not a {EXPORT_FORMAT} document")
        if "plan" not in export:
            raise AuditChainError("this export holds no plan definition (exported before DEE 0.1.0's plan field)")
        entries = msgspec.convert(export["entries"], list[AuditEntry])
        opened = export.get("opened") or {}
        if any(is_erased(part) for parts in opened.values() for part in parts.values()):
            return ReplayResult(False, [], [], erased=True)
        entries = [msgspec.structs.replace(e, **opened[str(e.seq)]) if str(e.seq) in opened else e for e in entries]
        compiled = self._compile(export["plan"])

        async def lookup(plan_id: str, version: int) -> CompiledPlan:
            if (plan_id, version) != (compiled.plan.id, compiled.plan.version):
                raise AuditChainError(f"the export holds plan {compiled.plan.id} v{compiled.plan.version}, not {plan_id} v{version}")
            return compiled

        return await Replayer(self.config, self.plugins, self.envs.templates, lookup).replay_run(entries)

    def _compile(self, document: dict[str, object]) -> CompiledPlan:
        version = document.get("version")
        if not isinstance(version, int):
            raise AuditChainError("the export's plan has no version")
        plan = msgspec.structs.replace(plan_from_document({k: v for k, v in document.items() if k != "version"}), version=version)
        return prepare_plan(plan, self.plugins.step_types(), None)
