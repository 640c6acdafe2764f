"""`create_plan` and `load_plan` (the public API): plans checked against the installed step
types and a project's templates."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from dee.errors import PlanFileError
from dee.plan.files import plan_from_document, read_document
from dee.plan.model import ExitCondition, Plan, Step, Transitions
from dee.plan.prepare import prepare_plan
from dee.plan.spec import TemplateStore
from dee.plan.validate import DEFAULT_MAX_STEPS
from dee.plugin.manager import PluginManager
from dee.project import find_project, project_of
from dee.project.templates import MemoryTemplateStore, load_directory


def default_templates() -> TemplateStore:
    """The templates of the project found from the working directory (none without one)."""
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
    step_types = (plugins or PluginManager.load()).step_types()
    return prepare_plan(plan, step_types, templates or default_templates(), max_steps).plan


def load_plan(
    path: str | os.PathLike[str],
    *,
    plugins: PluginManager | None = None,
    templates: TemplateStore | None = None,
) -> Plan:
    """Read and validate a plan file (YAML or JSON); raises PlanFileError or PlanValidationError.

    Without `templates`, template ids are checked against the plan's own project (the folder
    holding its `plans/` folder), else the project of the working directory."""
    try:
        plan = plan_from_document(read_document(path))
    except PlanFileError as exc:
        message = str(exc)
        raise PlanFileError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
    if templates is None:
        own = project_of(path)
        templates = load_directory(own) if own is not None else None
    return create_plan(
        plan.id, plan.name, plan.steps, plan.transitions, plan.exit_conditions, plugins=plugins, templates=templates
    )
