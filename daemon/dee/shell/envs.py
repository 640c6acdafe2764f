"""The one way to build a `KernelEnv`: per plan version, from the deployment's configuration.

Everything in an env is configuration or content (the compiled plan version, the template
store, the tick length, the channel settings), never live data; so the partition workers, the
memory engine, replay and `dee bench` all build it here and get the same one for a version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from dee.config import EngineConfig
from dee.kernel.machine import KernelEnv
from dee.kernel.policy import PolicyGate
from dee.kernel.retry import RetryPolicy
from dee.plan.compiled import CompiledPlan
from dee.plan.spec import TemplateStore


def history_ticks(gates: Iterable[PolicyGate], tick_interval_ms: int) -> int:
    """How many ticks back the gates read a contact's sends (`PolicyGate.history_ms`, the longest)."""
    longest = max((int(getattr(gate, "history_ms", 0) or 0) for gate in gates), default=0)
    return -(-longest // tick_interval_ms) if longest > 0 else 0


def kernel_env(config: EngineConfig, plan: CompiledPlan, templates: TemplateStore, gates: Iterable[PolicyGate] = ()) -> KernelEnv:
    gates = tuple(gates)
    tick_ms = config.scheduler.tick_interval_ms
    return KernelEnv(
        plan=plan, templates=templates, tick_interval_ms=tick_ms, settings=config.kernel_settings(),
        message_domain=config.message_domain, gates=gates, history_ticks=history_ticks(gates, tick_ms),
        retry=RetryPolicy(on_budget=config.policy.budgets.on_exhausted),
    )  # fmt: skip


PlanLookup = Callable[[str, int], Awaitable[CompiledPlan]]


class KernelEnvs:
    """The envs of one process, one per plan version, built on first use; `plans` looks a
    registered version up (in Postgres, in memory, in an export file); `gates` are the policy
    gates the plugins provide (`PluginManager.policy_gates`), asked in this order."""

    def __init__(self, config: EngineConfig, templates: TemplateStore, gates: Iterable[PolicyGate] = ()) -> None:
        self.config = config
        self.templates = templates
        self.gates = tuple(gates)
        self.history_ticks = history_ticks(self.gates, config.scheduler.tick_interval_ms)  # 0: no sends are kept
        self._envs: dict[tuple[str, int], KernelEnv] = {}

    async def get(self, plan_id: str, version: int, plans: PlanLookup) -> KernelEnv:
        key = (plan_id, version)
        env = self._envs.get(key)
        if env is None:
            env = self._envs[key] = kernel_env(self.config, await plans(plan_id, version), self.templates, self.gates)
        return env

    def cached(self, plan_id: str, version: int) -> KernelEnv | None:
        """The env if it was built before (the tick's fast path: no await per run)."""
        return self._envs.get((plan_id, version))
