"""`create_plan` and `prepare_plan`: from steps to a validated, checksummed, compiled plan."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
from msgspec.structs import replace

from dee.errors import PlanValidationError
from dee.plan.compiled import CompiledPlan, compile_plan
from dee.plan.model import ExitCondition, Plan, Step, Transitions, content_checksum
from dee.plan.validate import DEFAULT_MAX_STEPS, validate
from dee.plugin.contracts import TemplateStore
from dee.plugin.manager import PluginManager


def default_templates() -> TemplateStore:
    """The templates of the project found from the working directory (none without one)."""
    from dee.project import find_project
    from dee.templates import MemoryTemplateStore, load_directory

    project = find_project()
    return load_directory(project) if project is not None else MemoryTemplateStore(name="no project")


def create_plan(
    id: str,
    name: str,
    steps: Sequence[Step],
    transitions: Transitions | None = None,
    exit_conditions: Iterable[ExitCondition] = (),
    *,
    plugins: PluginManager | None = None,
    templates: TemplateStore | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Plan:
    """Validate a plan and return it with its content checksum.

    Raises `PlanValidationError` listing every problem. Step types come from the installed
    plugins, template ids are checked against `templates` (default: the templates of the
    project found from the working directory, see `dee.project`).
    """
    plan = Plan(
        id=id,
        name=name,
        steps=tuple(steps),
        transitions=transitions or Transitions(),
        exit_conditions=tuple(exit_conditions),
    )
    prepared = prepare_plan(plan, plugins or PluginManager.load(), templates or default_templates(), max_steps)
    return prepared.plan


def prepare_plan(
    plan: Plan, plugins: PluginManager, templates: TemplateStore | None, max_steps: int = DEFAULT_MAX_STEPS
) -> CompiledPlan:
    """Validate and compile; the returned plan carries its checksum (the version is kept).
    `templates` None: a registered version, whose template ids are not checked again."""
    step_types = plugins.step_types()
    params, problems = validate(plan, step_types, templates, max_steps)
    if problems:
        raise PlanValidationError(plan.id, problems)
    # Params in canonical form (as the step type reads them, defaults omitted), so a plan
    # written with or without default fields, in YAML or with builders, has one checksum.
    canonical = tuple(replace(s, params=msgspec.to_builtins(params[s.id])) for s in plan.steps)
    plan = replace(plan, steps=canonical)
    return compile_plan(replace(plan, checksum=content_checksum(plan.content())), step_types, params)
