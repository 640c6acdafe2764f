"""`prepare_plan`: from a plan to a validated, checksummed, compiled plan."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec.structs import replace

from dee.errors import PlanValidationError
from dee.plan.compiled import CompiledPlan, compile_plan
from dee.plan.model import Plan, content_checksum
from dee.plan.spec import StepSpec, TemplateStore
from dee.plan.validate import DEFAULT_MAX_STEPS, validate


def prepare_plan(
    plan: Plan, step_types: Mapping[str, StepSpec], templates: TemplateStore | None, max_steps: int = DEFAULT_MAX_STEPS
) -> CompiledPlan:
    """Validate and compile; the returned plan carries its checksum (the version is kept).
    `templates` None: a registered version, whose template ids are not checked again."""
    params, problems = validate(plan, step_types, templates, max_steps)
    if problems:
        raise PlanValidationError(plan.id, problems)
    # Params in canonical form (as the step type reads them, defaults omitted), so a plan
    # written with or without default fields, in YAML or with builders, has one checksum.
    canonical = tuple(replace(s, params=msgspec.to_builtins(params[s.id])) for s in plan.steps)
    plan = replace(plan, steps=canonical)
    return compile_plan(replace(plan, checksum=content_checksum(plan.content())), step_types, params)
