"""Plan validation: every rule of SPEC section 3.2, each problem reported with its step id.

Validation never stops at the first problem: a plan author fixes a file faster when every
problem is listed at once. Each rule is its own function so each has its own test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from dee.errors import PlanProblem
from dee.plan.compiled import successor_ids
from dee.plan.conditions import condition_problems
from dee.plan.model import Plan, Step
from dee.plan.spec import StepSpec, TemplateStore

STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DEFAULT_MAX_STEPS = 200


def convert_params(
    plan: Plan, step_types: Mapping[str, StepSpec]
) -> tuple[dict[str, Any], list[PlanProblem]]:
    """Each step's params converted to its type's Struct; unknown types and bad params reported."""
    params: dict[str, Any] = {}
    problems: list[PlanProblem] = []
    for step in plan.steps:
        step_type = step_types.get(step.type)
        if step_type is None:
            known = ", ".join(sorted(step_types))
            problems.append(PlanProblem(step.id, f"unknown step type {step.type!r} (known: {known})"))
            continue
        try:
            params[step.id] = msgspec.convert(step.params, step_type.params_type)
        except msgspec.ValidationError as exc:
            problems.append(PlanProblem(step.id, f"invalid {step.type} step: {exc}"))
    return params, problems


def check_ids(plan: Plan, max_steps: int) -> list[PlanProblem]:
    problems: list[PlanProblem] = []
    if not plan.id:
        problems.append(PlanProblem(None, "the plan has no id"))
    if not plan.steps:
        problems.append(PlanProblem(None, "the plan has no steps"))
    if len(plan.steps) > max_steps:
        problems.append(PlanProblem(None, f"the plan has {len(plan.steps)} steps; the maximum is {max_steps}"))
    seen: set[str] = set()
    for index, step in enumerate(plan.steps):
        if not step.id:
            problems.append(PlanProblem(None, f"step #{index + 1} ({step.type}) has no id"))
        elif not STEP_ID.fullmatch(step.id):
            problems.append(PlanProblem(step.id, "step id may hold only letters, digits, '_', '.' and '-'"))
        elif step.id in seen:
            problems.append(PlanProblem(step.id, "duplicate step id"))
        seen.add(step.id)
    return problems


def check_references(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> list[PlanProblem]:
    """Branch targets and explicit edges must name steps of this plan."""
    ids = {s.id for s in plan.steps}
    problems: list[PlanProblem] = []
    for step in plan.steps:
        if step.id in params:
            for target in step_types[step.type].targets(params[step.id]):
                if target not in ids:
                    problems.append(PlanProblem(step.id, f"goto to unknown step {target!r}"))
    for edge in plan.transitions.edges:
        if edge.from_ not in ids:
            problems.append(PlanProblem(edge.from_, f"edge from unknown step {edge.from_!r}"))
        if edge.to not in ids:
            problems.append(PlanProblem(edge.from_, f"edge to unknown step {edge.to!r}"))
    return problems


def check_transitions(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> list[PlanProblem]:
    """Explicit edges: not out of steps that pick their own successor or end the run, and a step
    with conditional edges needs a final unconditional one (no silent dead end)."""
    problems: list[PlanProblem] = []
    if plan.transitions.mode == "linear":
        if plan.transitions.edges:
            problems.append(PlanProblem(None, "linear transitions take no edges; use explicit transitions"))
        return problems
    for step in plan.steps:
        if step.id not in params:
            continue
        step_type = step_types[step.type]
        edges = [e for e in plan.transitions.edges if e.from_ == step.id]
        if edges and step_type.targets(params[step.id]):
            problems.append(PlanProblem(step.id, "a branch's successors come from its conditions, not from edges"))
        elif edges and step_type.ends_run:
            problems.append(PlanProblem(step.id, "an end step cannot have outgoing edges"))
        elif any(e.condition for e in edges) and edges[-1].condition is not None:
            problems.append(PlanProblem(step.id, "conditional edges need a final edge without a condition"))
        for edge in edges[:-1]:
            if edge.condition is None:
                problems.append(PlanProblem(step.id, f"the edge to {edge.to!r} has no condition but is not the last"))
    return problems


def check_conditions(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> list[PlanProblem]:
    ids = [s.id for s in plan.steps]
    problems: list[PlanProblem] = []
    for step in plan.steps:
        if step.id not in params:
            continue
        for expr, allow_default in step_types[step.type].conditions(params[step.id]):
            problems += [PlanProblem(step.id, p) for p in condition_problems(expr, ids, allow_default=allow_default)]
    for edge in plan.transitions.edges:
        if edge.condition is not None:
            problems += [PlanProblem(edge.from_, p) for p in condition_problems(edge.condition, ids, allow_default=False)]
    for exit_condition in plan.exit_conditions:
        problems += [
            PlanProblem(None, f"exit condition {exit_condition.when!r}: {p}")
            for p in condition_problems(exit_condition.when, ids, allow_default=False)
        ]
    return problems


def check_content(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any], templates: TemplateStore) -> list[PlanProblem]:
    problems: list[PlanProblem] = []
    for step in plan.steps:
        if step.id in params:
            problems += [PlanProblem(step.id, p) for p in step_types[step.type].check(params[step.id], templates)]
    return problems


def check_graph(plan: Plan, step_types: Mapping[str, StepSpec], params: Mapping[str, Any]) -> list[PlanProblem]:
    """Unreachable steps, and cycles with no waiting step on them (they could spin in one tick)."""
    if not plan.steps or len(params) != len(plan.steps):
        return []
    successors = successor_ids(plan, step_types, params)
    problems: list[PlanProblem] = []
    reached: set[str] = set()
    frontier = [plan.steps[0].id]
    while frontier:
        node = frontier.pop()
        if node in reached or node not in successors:
            continue
        reached.add(node)
        frontier.extend(successors[node])
    for step in plan.steps:
        if step.id not in reached:
            problems.append(PlanProblem(step.id, "unreachable from the first step"))
    waits = {s.id for s in plan.steps if step_types[s.type].always_waits(params[s.id])}
    instant = {k: [n for n in v if n in successors and n not in waits] for k, v in successors.items() if k not in waits}
    for cycle_start in _cycles(instant, [s.id for s in plan.steps]):
        problems.append(PlanProblem(cycle_start, "a cycle through this step has no wait on it"))
    return problems


def _cycles(graph: Mapping[str, list[str]], order: list[str]) -> list[str]:
    """One step of each cycle found in `graph` (iterative DFS, steps visited in plan order)."""
    colour: dict[str, int] = {}
    found: list[str] = []
    for root in order:
        if root not in graph or root in colour:
            continue
        colour[root] = 1
        stack = [(root, iter(graph.get(root, [])))]
        while stack:
            node, successors = stack[-1]
            nxt = next(successors, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
            elif colour.get(nxt) == 1:
                found.append(nxt)
            elif nxt not in colour:
                colour[nxt] = 1
                stack.append((nxt, iter(graph.get(nxt, []))))
    return list(dict.fromkeys(found))


def validate(
    plan: Plan, step_types: Mapping[str, StepSpec], templates: TemplateStore | None, max_steps: int = DEFAULT_MAX_STEPS
) -> tuple[dict[str, Any], list[PlanProblem]]:
    """All problems of a plan, and its converted params (usable only when there are none).

    `templates` None skips the content checks (template and script ids): for a stored plan
    version, which passed them when it was registered, read by a process that may hold no
    templates at all (`dee runs list` on an operator's laptop)."""
    problems = check_ids(plan, max_steps)
    # Later checks look at the first step of each id only; duplicates are already reported.
    first: dict[str, Step] = {}
    for step in plan.steps:
        first.setdefault(step.id, step)
    plan = msgspec.structs.replace(plan, steps=tuple(first.values()))
    params, param_problems = convert_params(plan, step_types)
    problems += param_problems
    problems += check_references(plan, step_types, params)
    problems += check_transitions(plan, step_types, params)
    problems += check_conditions(plan, step_types, params)
    if templates is not None:
        problems += check_content(plan, step_types, params, templates)
    if not any(p.message.startswith(("duplicate", "goto to unknown", "edge")) for p in problems):
        problems += check_graph(plan, step_types, params)
    return params, list(dict.fromkeys(problems))
