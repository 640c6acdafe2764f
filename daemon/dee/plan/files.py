"""Plan files: YAML or JSON documents with the plan's camelCase field names (parsing only:
`dee.project.plans.load_plan` also validates them).

A step is written flat (`id`, `type`, then the type's own fields), exactly as `Plan.content()`
produces it, so files round-trip and a file's checksum equals the Python-built plan's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import yaml

from dee.errors import PlanFileError
from dee.plan.model import ExitCondition, Plan, Step, Transitions


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"{file}: cannot read: {exc.strerror}") from exc
    try:
        doc = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(doc, dict):
        raise PlanFileError(f"{file}: a plan file must hold a mapping")
    return doc


def plan_from_document(doc: dict[str, Any]) -> Plan:
    """The (unvalidated) Plan a document describes; shape errors raise PlanFileError."""
    try:
        steps = []
        for raw in doc.get("steps") or []:
            if not isinstance(raw, dict):
                raise PlanFileError(f"each step must be a mapping, got {raw!r}")
            fields = dict(raw)
            step_id, step_type = fields.pop("id", None), fields.pop("type", None)
            steps.append(Step(id="" if step_id is None else str(step_id), type="" if step_type is None else str(step_type), params=fields))
        unknown = set(doc) - {"id", "name", "steps", "transitions", "exitConditions", "$schema"}
        if unknown:
            raise PlanFileError(f"unknown plan fields: {', '.join(sorted(unknown))}")
        return Plan(
            id=str(doc.get("id", "")),
            name=str(doc.get("name", doc.get("id", ""))),
            steps=tuple(steps),
            transitions=msgspec.convert(doc.get("transitions") or {}, Transitions),
            exit_conditions=tuple(msgspec.convert(doc.get("exitConditions") or [], list[ExitCondition])),
        )
    except msgspec.ValidationError as exc:
        raise PlanFileError(f"plan {doc.get('id', '?')!r}: {exc}") from exc
