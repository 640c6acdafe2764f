"""Plan graphs for `dee plan graph`: Mermaid (renders on GitHub) and Graphviz dot."""

from __future__ import annotations

from dee.plan.compiled import CompiledPlan


def edges(plan: CompiledPlan) -> list[tuple[str, str, str]]:
    """(from, to, label) for every way between steps, in plan order."""
    out: list[tuple[str, str, str]] = []
    for step in plan.plan.steps:
        step_type = plan.step_types[step.type]
        params = plan.params[step.id]
        targets = step_type.targets(params)
        if targets:
            conditions = [expr for expr, _ in step_type.conditions(params)]
            out += [(step.id, target, expr) for target, expr in zip(targets, conditions, strict=True)]
        else:
            for route in plan.routes.get(step.id, ()):
                out.append((step.id, route.to, route.condition.source if route.condition else ""))
    return out


def _node_label(plan: CompiledPlan, step_id: str) -> str:
    return f"{step_id}\\n({plan.plan.step(step_id).type})"


def to_mermaid(plan: CompiledPlan) -> str:
    ids = {s.id: f"s{i}" for i, s in enumerate(plan.plan.steps)}
    lines = ["flowchart TD"]
    for step in plan.plan.steps:
        shape = ("{", "}") if step.type == "branch" else ("([", "])") if step.type == "end" else ("[", "]")
        label = _node_label(plan, step.id).replace("\\n", "<br/>")
        lines.append(f'    {ids[step.id]}{shape[0]}"{label}"{shape[1]}')
    for a, b, label in edges(plan):
        text = label.replace('"', "#quot;")
        lines.append(f'    {ids[a]} -->|"{text}"| {ids[b]}' if label else f"    {ids[a]} --> {ids[b]}")
    return "\n".join(lines)


def to_dot(plan: CompiledPlan) -> str:
    lines = [f'digraph "{plan.plan.id}" {{', "    rankdir=TB;"]
    for step in plan.plan.steps:
        shape = "diamond" if step.type == "branch" else "doublecircle" if step.type == "end" else "box"
        lines.append(f'    "{step.id}" [shape={shape}, label="{_node_label(plan, step.id)}"];')
    for a, b, label in edges(plan):
        escaped = label.replace('"', '\\"')
        lines.append(f'    "{a}" -> "{b}" [label="{escaped}"];' if label else f'    "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines)
