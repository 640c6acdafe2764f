"""A plan made ready to run: params converted, conditions compiled, successors resolved.

Built once per plan version (by `create_plan`, or when a stored plan is loaded) and shared by
every run of that version; it is immutable, so sharing it across runs cannot leak state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dee.plan.conditions import CompiledCondition, ConditionSnapshot, compile_condition
from dee.plan.model import Plan, Step
from dee.plan.spec import StepSpec


@dataclass(frozen=True, slots=True)
class Route:
    """One way out of a step: to `to` when `condition` holds (or always, when it is None)."""

    to: str
    condition: CompiledCondition | None = None


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    plan: Plan
    step_types: Mapping[str, StepSpec]
    params: Mapping[str, Any]
    routes: Mapping[str, tuple[Route, ...]]
    conditions: Mapping[str, CompiledCondition]
    exit_conditions: tuple[tuple[CompiledCondition, str], ...]
    remaining: Mapping[str, int]
    steps: Mapping[str, Step]  # by id: the kernel looks a step up several times per transition

    def step(self, step_id: str) -> Step:
        try:
            return self.steps[step_id]
        except KeyError:
            raise KeyError(step_id) from None

    def type_of(self, step_id: str) -> StepSpec:
        return self.step_types[self.step(step_id).type]

    def condition(self, expression: str) -> CompiledCondition:
        return self.conditions[expression]

    def next_step(self, step_id: str, snapshot: ConditionSnapshot) -> str | None:
        """The successor chosen by the plan's transitions, or None when the step has none."""
        for route in self.routes.get(step_id, ()):
            if route.condition is None or route.condition.evaluate(snapshot):
                return route.to
        return None


def successor_ids(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every step's possible successors (branch targets and transition edges), in plan order."""
    out: dict[str, list[str]] = {s.id: [] for s in plan.steps}
    for index, step in enumerate(plan.steps):
        step_type = step_types.get(step.type)
        if step_type is None or step.id not in params:
            continue
        targets = step_type.targets(params[step.id])
        if targets:
            out[step.id] = list(dict.fromkeys(targets))
        elif step_type.ends_run:
            continue
        elif plan.transitions.mode == "linear":
            if index + 1 < len(plan.steps):
                out[step.id] = [plan.steps[index + 1].id]
        else:
            out[step.id] = list(dict.fromkeys(e.to for e in plan.transitions.edges if e.from_ == step.id))
    return out


def longest_remaining(successors: Mapping[str, list[str]], order: list[str]) -> dict[str, int]:
    """Steps on the longest remaining path from each step to the end, the step itself included.

    Edges that close a cycle are ignored (a cycle is bounded by its waits, not infinite work),
    which makes this a longest-path computation on a DAG: linear time, deterministic order.
    """
    state: dict[str, int] = {}
    memo: dict[str, int] = {}
    for root in order:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(successors.get(root, [])))]
        while stack:
            node, pending = stack[-1]
            nxt = next(pending, None)
            if nxt is None:
                memo[node] = 1 + max((memo[n] for n in successors.get(node, []) if n in memo), default=0)
                state[node] = 2
                stack.pop()
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(successors.get(nxt, []))))
    return memo


def compile_plan(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> CompiledPlan:
    """Assemble a CompiledPlan from a plan that already passed validation."""
    expressions: dict[str, CompiledCondition] = {}

    def compiled(expr: str) -> CompiledCondition:
        if expr not in expressions:
            expressions[expr] = compile_condition(expr)
        return expressions[expr]

    for step in plan.steps:
        for expr, _ in step_types[step.type].conditions(params[step.id]):
            compiled(expr)
    routes: dict[str, tuple[Route, ...]] = {}
    for index, step in enumerate(plan.steps):
        step_type = step_types[step.type]
        if step_type.ends_run or step_type.targets(params[step.id]):
            continue
        if plan.transitions.mode == "explicit":
            edges = [e for e in plan.transitions.edges if e.from_ == step.id]
            routes[step.id] = tuple(Route(e.to, compiled(e.condition) if e.condition else None) for e in edges)
        elif index + 1 < len(plan.steps):
            routes[step.id] = (Route(plan.steps[index + 1].id),)
    exits = tuple((compiled(x.when), x.outcome) for x in plan.exit_conditions)
    successors = successor_ids(plan, step_types, params)
    return CompiledPlan(
        plan=plan,
        step_types={s.type: step_types[s.type] for s in plan.steps},
        params=dict(params),
        routes=routes,
        conditions=expressions,
        exit_conditions=exits,
        remaining=longest_remaining(successors, [s.id for s in plan.steps]),
        steps={s.id: s for s in plan.steps},
    )
