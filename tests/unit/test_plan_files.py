"""Plan files (SPEC 3.2): YAML/JSON plans load, checksum like Python-built plans, and fail clearly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dee.errors import PlanFileError, PlanValidationError
from dee.plan import steps, transitions
from dee.plan.model import Condition, Duration, Edge, ExitCondition, Tracking, Voicemail
from dee.plugin.manager import PluginManager
from dee.project.plans import create_plan, load_plan
from dee.project.templates import MemoryTemplateStore, load_directory

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
PLANS = CONFIG / "plans"
SALES = PLANS / "sales-outreach-v2.yaml"
WELCOME = PLANS / "welcome-sequence.yaml"
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    return PluginManager.load()


@pytest.fixture(scope="module")
def templates() -> MemoryTemplateStore:
    return load_directory(CONFIG)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def as_json_copy(source: Path, target: Path) -> Path:
    target.write_text(json.dumps(yaml.safe_load(source.read_text(encoding="utf-8")), indent=2), encoding="utf-8")
    return target


# --- the shipped plans ---


def test_sales_outreach_loads(templates) -> None:
    plan = load_plan(SALES, templates=templates)
    assert plan.id == "sales-outreach-v2"
    assert plan.name == "Sales outreach v2"
    assert len(plan.steps) == 13
    assert plan.steps[0].id == "initial-email"
    assert plan.step("call-attempt").type == "sendVoice"
    assert plan.step("call-attempt").params == {
        "scriptId": "script_intro_call", "voicemail": {"messageId": "vm_intro"}}  # canonical: defaults omitted
    assert plan.transitions.mode == "explicit"
    assert Edge(from_="breakup-email", to="end-no-reply") in plan.transitions.edges
    assert [e.outcome for e in plan.exit_conditions] == ["unsubscribed", "bounced", "replied"]
    assert HEX64.fullmatch(plan.checksum)


def test_welcome_sequence_loads(templates) -> None:
    plan = load_plan(WELCOME, templates=templates)
    assert plan.id == "welcome-sequence"
    assert [s.type for s in plan.steps] == [
        "sendEmail", "wait", "sendEmail", "wait", "branch", "sendEmail", "end", "end"]
    assert plan.transitions.mode == "linear"
    assert HEX64.fullmatch(plan.checksum)


def test_shipped_plans_have_different_checksums(templates) -> None:
    assert load_plan(SALES, templates=templates).checksum != load_plan(WELCOME, templates=templates).checksum


def test_shipped_plan_needs_its_templates(plugins) -> None:
    """The template store really is consulted: without the config templates the plan is invalid."""
    with pytest.raises(PlanValidationError) as info:
        load_plan(SALES, plugins=plugins, templates=MemoryTemplateStore({}))
    step_ids = {p.step_id for p in info.value.problems}
    assert {"initial-email", "call-attempt"} <= step_ids


# --- YAML, JSON and Python give the same checksum for the same content ---


@pytest.mark.parametrize("source", [SALES, WELCOME], ids=lambda p: p.stem)
def test_yaml_and_json_same_checksum(tmp_path: Path, plugins, templates, source: Path) -> None:
    from_yaml = load_plan(source, plugins=plugins, templates=templates)
    from_json = load_plan(as_json_copy(source, tmp_path / f"{source.stem}.json"), plugins=plugins, templates=templates)
    assert from_json.checksum == from_yaml.checksum
    assert from_json.content() == from_yaml.content()


def test_json_with_other_content_has_other_checksum(tmp_path: Path, plugins, templates) -> None:
    doc = yaml.safe_load(SALES.read_text(encoding="utf-8"))
    doc["steps"][0]["subject"] = "Another subject"
    changed = write(tmp_path / "changed.json", json.dumps(doc))
    assert load_plan(changed, plugins=plugins, templates=templates).checksum != \
        load_plan(SALES, plugins=plugins, templates=templates).checksum


def test_comments_and_key_order_do_not_change_the_checksum(tmp_path: Path, plugins, templates) -> None:
    reordered = write(tmp_path / "reordered.yaml", """
# the same plan as the welcome sequence, keys in another order, with comments
exitConditions:
  - {outcome: unsubscribed, when: contact.unsubscribed}
  - {outcome: bounced, when: contact.bounced}
transitions: {mode: linear}
name: Welcome sequence
id: welcome-sequence
steps:
  - {type: sendEmail, id: welcome-email, subject: "Welcome to {{ product }}, {{ contact.first_name }}",
     tracking: {clicks: true, opens: true}, templateId: tmpl_welcome}
  - {duration: {days: 1}, type: wait, id: wait-1-day}
  - {id: tips-email, templateId: tmpl_getting_started, type: sendEmail,
     subject: "Three things to try in {{ product }}", tracking: {opens: true, clicks: true}}
  - {id: wait-6-days, type: wait, duration: {days: 6}}
  - id: check-engagement
    type: branch
    conditions:
      - {goto: end-engaged, when: 'events.hasClick(any)'}
      - {goto: check-in-email, when: default}
  - {id: check-in-email, type: sendEmail, templateId: tmpl_check_in,
     subject: "How is {{ product }} working for you?"}
  - {id: end-checked-in, type: end, outcome: checked_in}
  - {id: end-engaged, type: end, outcome: engaged}
""")
    assert load_plan(reordered, plugins=plugins, templates=templates).checksum == \
        load_plan(WELCOME, plugins=plugins, templates=templates).checksum


SMALL_PLAN_FULL = """
$schema: ../schema/plan.schema.json
id: small-plan
name: Small plan
steps:
  - id: hello
    type: sendEmail
    templateId: tmpl_welcome
    subject: "Hello {{ contact.first_name }}"
    tracking: {opens: true, clicks: false}
  - id: pause
    type: wait
    duration: {days: 2, hours: 0, minutes: 0, seconds: 0}
  - id: check
    type: branch
    conditions:
      - {when: 'events.hasOpen("hello")', goto: done}
      - {when: default, goto: call}
  - id: call
    type: sendVoice
    scriptId: script_intro_call
    voicemail: {detect: true, messageId: vm_intro}
  - id: done
    type: end
    outcome: finished
transitions:
  mode: explicit
  edges:
    - {from: hello, to: pause}
    - {from: pause, to: check}
    - {from: call, to: done}
exitConditions:
  - {when: contact.unsubscribed, outcome: unsubscribed}
"""

# The same plan as people write it (and as the shipped plans are written): fields left at their
# default value are simply omitted.
SMALL_PLAN_SHORT = (
    SMALL_PLAN_FULL
    .replace("tracking: {opens: true, clicks: false}", "tracking: {opens: true}")
    .replace("duration: {days: 2, hours: 0, minutes: 0, seconds: 0}", "duration: {days: 2}")
)


def small_plan_from_builders(plugins, templates):
    return create_plan(
        id="small-plan",
        name="Small plan",
        steps=[
            steps.send_email(id="hello", template_id="tmpl_welcome", subject="Hello {{ contact.first_name }}",
                             tracking=Tracking(opens=True)),
            steps.wait(id="pause", duration=Duration(days=2)),
            steps.branch(id="check", conditions=[
                Condition(when='events.hasOpen("hello")', goto="done"),
                Condition(when="default", goto="call"),
            ]),
            steps.send_voice(id="call", script_id="script_intro_call",
                             voicemail=Voicemail(detect=True, message_id="vm_intro")),
            steps.end(id="done", outcome="finished"),
        ],
        transitions=transitions.explicit([
            Edge(from_="hello", to="pause"),
            Edge(from_="pause", to="check"),
            Edge(from_="call", to="done"),
        ]),
        exit_conditions=[ExitCondition(when="contact.unsubscribed", outcome="unsubscribed")],
        plugins=plugins,
        templates=templates,
    )


def test_builders_and_file_same_checksum(tmp_path: Path, plugins, templates) -> None:
    from_file = load_plan(write(tmp_path / "small.yaml", SMALL_PLAN_FULL), plugins=plugins, templates=templates)
    built = small_plan_from_builders(plugins, templates)
    assert built.content() == from_file.content()
    assert built.checksum == from_file.checksum


def test_builders_and_file_omitting_defaults_same_checksum(tmp_path: Path, plugins, templates) -> None:
    """`duration: {days: 2}` is the same content as `Duration(days=2)`; so is `tracking: {opens: true}`
    and `Tracking(opens=True)`. The checksum is of the content, so it must not care which was written."""
    from_file = load_plan(write(tmp_path / "small.yaml", SMALL_PLAN_SHORT), plugins=plugins, templates=templates)
    built = small_plan_from_builders(plugins, templates)
    assert built.checksum == from_file.checksum


def test_builders_and_file_differ_when_content_differs(tmp_path: Path, plugins, templates) -> None:
    other = SMALL_PLAN_FULL.replace("outcome: finished", "outcome: done")
    from_file = load_plan(write(tmp_path / "small.yaml", other), plugins=plugins, templates=templates)
    assert from_file.checksum != small_plan_from_builders(plugins, templates).checksum


# --- broken files ---


def assert_file_error(path: Path, plugins, templates, fragment: str = "") -> PlanFileError:
    with pytest.raises(PlanFileError) as info:
        load_plan(path, plugins=plugins, templates=templates)
    message = str(info.value)
    assert str(path) in message, f"the path {path} is missing from {message!r}"
    assert fragment in message
    return info.value


def test_file_not_a_mapping(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "list.yaml", "- id: a\n- id: b\n")
    assert_file_error(path, plugins, templates, "mapping")


def test_empty_file(tmp_path: Path, plugins, templates) -> None:
    assert_file_error(write(tmp_path / "empty.yaml", ""), plugins, templates, "mapping")


def test_invalid_yaml(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "broken.yaml", "id: broken\nsteps: [\n  {id: a, type: end\n")
    assert_file_error(path, plugins, templates, "YAML")


def test_invalid_json(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "broken.json", '{"id": "broken", "steps": [}')
    assert_file_error(path, plugins, templates, "JSON")


def test_unknown_top_level_field(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "extra.yaml", SMALL_PLAN_FULL + "owner: sales-team\n")
    assert_file_error(path, plugins, templates, "owner")


def test_bad_transitions_mode(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "mode.yaml", SMALL_PLAN_FULL.replace("mode: explicit", "mode: circular"))
    assert_file_error(path, plugins, templates, "circular")


def test_step_not_a_mapping(tmp_path: Path, plugins, templates) -> None:
    path = write(tmp_path / "step.yaml", "id: p\nname: P\nsteps:\n  - just-a-string\n")
    assert_file_error(path, plugins, templates, "just-a-string")


def test_missing_file(tmp_path: Path, plugins, templates) -> None:
    assert_file_error(tmp_path / "does-not-exist.yaml", plugins, templates, "cannot read")


def test_file_with_validation_problems(tmp_path: Path, plugins, templates) -> None:
    broken = SMALL_PLAN_FULL.replace("goto: call", "goto: nowhere").replace(
        "templateId: tmpl_welcome", "templateId: tmpl_missing")
    with pytest.raises(PlanValidationError) as info:
        load_plan(write(tmp_path / "invalid.yaml", broken), plugins=plugins, templates=templates)
    problems = info.value.problems
    assert info.value.plan_id == "small-plan"
    assert any(p.step_id == "check" and "goto to unknown step 'nowhere'" in p.message for p in problems), problems
    assert any(p.step_id == "hello" and "unknown email template 'tmpl_missing'" in p.message for p in problems), problems


def test_step_with_empty_id_is_a_missing_id(tmp_path: Path, plugins, templates) -> None:
    """`id:` with nothing after it is YAML null: the step has no id, it is not a step named 'None'."""
    path = write(tmp_path / "noid.yaml", "id: p\nname: P\nsteps:\n  - {id: first, type: wait, duration: {days: 1}}\n"
                                         "  - id:\n    type: end\n    outcome: done\n")
    with pytest.raises(PlanValidationError) as info:
        load_plan(path, plugins=plugins, templates=templates)
    assert any(p.step_id is None and "has no id" in p.message for p in info.value.problems), info.value.problems
