"""config/schema/plan.schema.json: the shipped plans validate, broken plan documents do not, and the
schema agrees with the loader on what it rejects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dee.errors import PlanFileError, PlanValidationError
from dee.plan.files import plan_from_document
from dee.plugin.manager import PluginManager
from dee.project.plans import create_plan, load_plan
from dee.project.templates import load_directory

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
SCHEMA_PATH = CONFIG / "schema" / "plan.schema.json"
SHIPPED = sorted((CONFIG / "plans").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    return PluginManager.load()


@pytest.fixture(scope="module")
def templates():
    return load_directory(CONFIG)


def read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_schema_is_draft_2020_12() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_both_shipped_plans_are_checked() -> None:
    assert {p.name for p in SHIPPED} >= {"sales-outreach-v2.yaml", "welcome-sequence.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_plan_validates(validator, path: Path) -> None:
    assert errors(validator, read(path)) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_plan_points_at_the_schema(path: Path) -> None:
    assert (path.parent / read(path)["$schema"]).resolve() == SCHEMA_PATH.resolve()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_loaded_plan_content_validates(validator, plugins, templates, path: Path) -> None:
    """What `Plan.content()` writes back out (as JSON) is a valid plan file too."""
    content = load_plan(path, plugins=plugins, templates=templates).content()
    assert errors(validator, json.loads(json.dumps(content))) == []


def sales() -> dict[str, Any]:
    return copy.deepcopy(read(CONFIG / "plans" / "sales-outreach-v2.yaml"))


def step(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def missing_id(doc):
    del doc["id"]


def wait_without_duration(doc):
    del step(doc, "wait-1")["duration"]


def unknown_email_field(doc):
    step(doc, "initial-email")["priority"] = "high"


def bad_transitions_mode(doc):
    doc["transitions"]["mode"] = "circular"


def unknown_top_level_field(doc):
    doc["owner"] = "sales-team"


def email_without_template(doc):
    del step(doc, "initial-email")["templateId"]


def unknown_tracking_field(doc):
    step(doc, "initial-email")["tracking"]["forwards"] = True


def voice_unknown_voicemail_field(doc):
    step(doc, "call-attempt")["voicemail"]["message"] = "hello"


def duration_in_weeks(doc):
    step(doc, "wait-1")["duration"] = {"weeks": 1}


def fractional_duration(doc):
    step(doc, "wait-1")["duration"] = {"days": 1.5}


def branch_condition_without_goto(doc):
    del step(doc, "check-email-1")["conditions"][0]["goto"]


def end_without_outcome(doc):
    del step(doc, "end-replied")["outcome"]


def step_without_type(doc):
    del step(doc, "wait-1")["type"]


def bad_step_id(doc):
    step(doc, "wait-1")["id"] = "wait 1"


def edge_without_to(doc):
    del doc["transitions"]["edges"][0]["to"]


def exit_condition_without_outcome(doc):
    del doc["exitConditions"][0]["outcome"]


def no_steps(doc):
    doc["steps"] = []


BROKEN = [
    missing_id, wait_without_duration, unknown_email_field, bad_transitions_mode, unknown_top_level_field,
    email_without_template, unknown_tracking_field, voice_unknown_voicemail_field, duration_in_weeks,
    fractional_duration, branch_condition_without_goto, end_without_outcome, step_without_type, bad_step_id,
    edge_without_to, exit_condition_without_outcome, no_steps,
]


@pytest.mark.parametrize("breakage", BROKEN, ids=lambda f: f.__name__)
def test_broken_document_is_rejected(validator, breakage) -> None:
    doc = sales()
    assert errors(validator, doc) == []  # the document is fine until it is broken
    breakage(doc)
    assert errors(validator, doc) != []


@pytest.mark.parametrize("breakage", BROKEN, ids=lambda f: f.__name__)
def test_loader_also_rejects_what_the_schema_rejects(plugins, templates, breakage) -> None:
    doc = sales()
    breakage(doc)
    with pytest.raises((PlanFileError, PlanValidationError)):
        plan = plan_from_document(doc)
        create_plan(plan.id, plan.name, plan.steps, plan.transitions, plan.exit_conditions,
                    plugins=plugins, templates=templates)


def test_error_points_at_the_broken_step(validator) -> None:
    doc = sales()
    unknown_email_field(doc)
    found = list(validator.iter_errors(doc))
    assert found
    assert any(list(e.absolute_path)[:2] == ["steps", 0] for e in found), [e.message for e in found]


def test_plugin_step_type_may_carry_any_fields(validator) -> None:
    doc = sales()
    doc["steps"].insert(3, {"id": "post-to-crm", "type": "crmNote", "note": "called", "fields": {"x": [1, 2]}})
    assert errors(validator, doc) == []


def test_plugin_step_still_needs_an_id(validator) -> None:
    doc = sales()
    doc["steps"].insert(3, {"type": "crmNote", "note": "called"})
    assert errors(validator, doc) != []


def test_minimal_plan_validates(validator) -> None:
    doc = {"id": "tiny", "steps": [{"id": "done", "type": "end", "outcome": "completed"}]}
    assert errors(validator, doc) == []


def test_edge_condition_may_be_null(validator) -> None:
    doc = sales()
    doc["transitions"]["edges"][0]["condition"] = None
    assert errors(validator, doc) == []


def test_python_built_plan_content_validates(validator, plugins, templates) -> None:
    """A plan built with the Python builders, written out, is a valid plan file."""
    from dee.plan import steps, transitions
    from dee.plan.model import Condition, Duration, Edge, ExitCondition, Tracking, Voicemail

    plan = create_plan(
        "built", "Built in Python",
        [
            steps.send_email(id="hello", template_id="tmpl_welcome", subject="Hi",
                             reply_to="sales@example.com", tracking=Tracking(opens=True)),
            steps.wait(id="pause", duration=Duration(days=1, hours=2)),
            steps.branch(id="check", conditions=[
                Condition(when='events.hasOpen("hello")', goto="call"),
                Condition(when="default", goto="done"),
            ]),
            steps.send_voice(id="call", script_id="script_intro_call", caller_id="+15550100",
                             max_duration=Duration(minutes=3), voicemail=Voicemail(detect=True)),
            steps.end(id="done", outcome="completed"),
        ],
        transitions.explicit([Edge(from_="hello", to="pause"), Edge(from_="pause", to="check"),
                              Edge(from_="call", to="done", condition=None)]),
        [ExitCondition(when="contact.unsubscribed", outcome="unsubscribed")],
        plugins=plugins, templates=templates,
    )
    assert errors(validator, json.loads(json.dumps(plan.content()))) == []


def test_optional_fields_may_be_null(validator, plugins, templates) -> None:
    doc = sales()
    step(doc, "initial-email")["replyTo"] = None
    step(doc, "breakup-email")["tracking"] = None
    step(doc, "call-attempt")["callerId"] = None
    step(doc, "call-attempt")["voicemail"]["messageId"] = None
    assert errors(validator, doc) == []
    plan = plan_from_document(doc)  # the loader accepts them too
    create_plan(plan.id, plan.name, plan.steps, plan.transitions, plan.exit_conditions,
                plugins=plugins, templates=templates)


def test_required_fields_may_not_be_null(validator) -> None:
    doc = sales()
    step(doc, "initial-email")["templateId"] = None
    assert errors(validator, doc) != []
