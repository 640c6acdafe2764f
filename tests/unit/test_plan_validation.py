"""Plan validation (SPEC 3.2, dee.plan.validate): one test per rule, each naming the exact problem.

Every invalid plan here is a small valid plan with one thing broken, so a test can only pass when
that one rule fires, with the step id it is about and a message that says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from dee.errors import PlanProblem, PlanValidationError
from dee.plan import steps, transitions
from dee.plan.model import (
    Condition,
    Duration,
    Edge,
    ExitCondition,
    Plan,
    Step,
    Tracking,
    Transitions,
    Voicemail,
)
from dee.plan.registry import PlanRegistry
from dee.plan.validate import DEFAULT_MAX_STEPS
from dee.plugin.manager import PluginManager
from dee.project.plans import create_plan
from dee.project.templates import MemoryTemplateStore

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    return PluginManager.load()


@pytest.fixture(scope="module")
def templates() -> MemoryTemplateStore:
    return MemoryTemplateStore({
        "email": {
            "tmpl_intro": {"subject": "Hello", "text": "Hi {{ contact.first_name }}"},
            "tmpl_follow_up": {"text": "Following up"},
        },
        "voice": {"script_call": {"kind": "script", "greeting": "Hi", "steps": []}},
        "voicemail": {"vm_message": {"kind": "voicemail", "tts": "Sorry we missed you"}},
    })


@pytest.fixture
def build(plugins: PluginManager, templates: MemoryTemplateStore):
    """create_plan with this module's plugins and templates."""

    def _build(
        step_list: Sequence[Step],
        trans: Transitions | None = None,
        exits: Sequence[ExitCondition] = (),
        *,
        plan_id: str = "test-plan",
        name: str = "Test plan",
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> Plan:
        return create_plan(plan_id, name, step_list, trans, exits,
                           plugins=plugins, templates=templates, max_steps=max_steps)

    return _build


@pytest.fixture
def problems_of(build):
    """The problems create_plan reports for an invalid plan (fails the test if it is accepted)."""

    def _problems(*args, **kwargs) -> list[PlanProblem]:
        with pytest.raises(PlanValidationError) as info:
            build(*args, **kwargs)
        assert info.value.problems, "PlanValidationError must list at least one problem"
        return info.value.problems

    return _problems


def has_problem(problems: Sequence[PlanProblem], step_id: str | None, fragment: str) -> bool:
    return any(p.step_id == step_id and fragment in p.message for p in problems)


def assert_problem(problems: Sequence[PlanProblem], step_id: str | None, fragment: str) -> None:
    assert has_problem(problems, step_id, fragment), (
        f"expected a problem for step {step_id!r} containing {fragment!r}, got {problems!r}"
    )


def day_wait(step_id: str) -> Step:
    return steps.wait(id=step_id, duration=Duration(days=1))


def end(step_id: str = "done", outcome: str = "completed") -> Step:
    return steps.end(id=step_id, outcome=outcome)


def email(step_id: str, template_id: str = "tmpl_intro") -> Step:
    return steps.send_email(id=step_id, template_id=template_id, subject="Hello {{ contact.first_name }}")


# --- baseline: the building blocks are valid, so every failure below comes from the broken part ---


def test_baseline_plan_is_valid(build) -> None:
    plan = build([
        email("intro"),
        day_wait("wait-1"),
        steps.branch(id="check", conditions=[
            Condition(when='events.hasReply("intro")', goto="replied"),
            Condition(when="default", goto="call"),
        ]),
        steps.send_voice(id="call", script_id="script_call",
                         voicemail=Voicemail(detect=True, message_id="vm_message")),
        end("no-reply", "no_response"),
        end("replied", "replied"),
    ], exits=[ExitCondition(when="contact.unsubscribed", outcome="unsubscribed")])
    assert [s.id for s in plan.steps] == ["intro", "wait-1", "check", "call", "no-reply", "replied"]


# --- step ids ---


def test_duplicate_step_id(problems_of) -> None:
    problems = problems_of([day_wait("same"), day_wait("same"), end()])
    assert_problem(problems, "same", "duplicate step id")


def test_missing_step_id(problems_of) -> None:
    problems = problems_of([day_wait("first"), Step(id="", type="end", params={"outcome": "x"})])
    assert_problem(problems, None, "step #2 (end) has no id")


@pytest.mark.parametrize("bad_id", ["has space", "-leading-dash", "slash/inside", "emoji-\u2603", "trailing\n"])
def test_invalid_step_id_characters(problems_of, bad_id: str) -> None:
    problems = problems_of([day_wait("first"), end(bad_id)])
    assert_problem(problems, bad_id, "step id may hold only letters, digits")


def test_valid_step_id_characters_are_accepted(build) -> None:
    plan = build([day_wait("Wait_1.a-b"), end("9-end")])
    assert plan.steps[0].id == "Wait_1.a-b"


# --- step types and their params ---


def test_unknown_step_type(problems_of) -> None:
    problems = problems_of([Step(id="fax", type="sendFax", params={"number": "+1555"}), end()])
    assert_problem(problems, "fax", "unknown step type 'sendFax'")
    # the message helps the author: it lists the types that do exist
    assert_problem(problems, "fax", "sendEmail")


def test_wait_without_duration(problems_of) -> None:
    problems = problems_of([Step(id="pause", type="wait", params={}), end()])
    assert_problem(problems, "pause", "invalid wait step")
    assert_problem(problems, "pause", "duration")


def test_unknown_field_on_step(problems_of) -> None:
    problems = problems_of([
        Step(id="intro", type="sendEmail",
             params={"templateId": "tmpl_intro", "subject": "Hi", "priority": "high"}),
        end(),
    ])
    assert_problem(problems, "intro", "invalid sendEmail step")
    assert_problem(problems, "intro", "priority")


def test_wrong_param_type(problems_of) -> None:
    problems = problems_of([Step(id="pause", type="wait", params={"duration": {"days": "three"}}), end()])
    assert_problem(problems, "pause", "invalid wait step")


def test_negative_wait(problems_of) -> None:
    problems = problems_of([steps.wait(id="pause", duration=Duration(days=-1)), end()])
    assert_problem(problems, "pause", "cannot be negative")


# --- graph ---


def test_unreachable_step(problems_of) -> None:
    # linear: `done` ends the run, so `orphan` after it is never reached
    problems = problems_of([day_wait("first"), end("done"), email("orphan")])
    assert_problem(problems, "orphan", "unreachable")
    assert not has_problem(problems, "first", "unreachable")
    assert not has_problem(problems, "done", "unreachable")


def test_unreachable_step_explicit(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done"), end("never")],
        transitions.explicit([Edge(from_="first", to="done")]),
    )
    assert_problem(problems, "never", "unreachable")


def test_cycle_without_wait(problems_of) -> None:
    problems = problems_of([
        email("intro"),
        steps.branch(id="check", conditions=[
            Condition(when='events.hasReply("intro")', goto="done"),
            Condition(when="default", goto="intro"),
        ]),
        end("done"),
    ])
    cyclic = [p for p in problems if "has no wait" in p.message]
    assert cyclic, problems
    assert {p.step_id for p in cyclic} <= {"intro", "check"}


def test_branch_looping_to_itself(problems_of) -> None:
    problems = problems_of([
        steps.branch(id="spin", conditions=[
            Condition(when="contact.bounced", goto="done"),
            Condition(when="default", goto="spin"),
        ]),
        end("done"),
    ])
    assert_problem(problems, "spin", "a cycle through this step has no wait on it")


def test_cycle_with_zero_length_wait_is_rejected(problems_of) -> None:
    problems = problems_of([
        steps.wait(id="no-time", duration=Duration()),
        steps.branch(id="check", conditions=[
            Condition(when="contact.bounced", goto="done"),
            Condition(when="default", goto="no-time"),
        ]),
        end("done"),
    ])
    assert any("has no wait" in p.message and p.step_id in ("no-time", "check") for p in problems), problems


def test_cycle_with_wait_is_accepted(build) -> None:
    plan = build([
        email("intro"),
        steps.wait(id="pause", duration=Duration(hours=1)),
        steps.branch(id="check", conditions=[
            Condition(when='events.hasReply("intro")', goto="done"),
            Condition(when="default", goto="intro"),
        ]),
        end("done"),
    ])
    assert HEX64.fullmatch(plan.checksum)


# --- branches ---


def test_branch_without_default(problems_of) -> None:
    problems = problems_of([
        steps.branch(id="check", conditions=[Condition(when="contact.bounced", goto="done")]),
        end("done"),
    ])
    assert_problem(problems, "check", "needs a final `default`")


def test_branch_with_no_conditions(problems_of) -> None:
    problems = problems_of([steps.branch(id="check", conditions=[]), end("done")])
    assert_problem(problems, "check", "needs a final `default`")


def test_default_not_last(problems_of) -> None:
    problems = problems_of([
        steps.branch(id="check", conditions=[
            Condition(when="default", goto="done"),
            Condition(when="contact.bounced", goto="bounced"),
        ]),
        end("done"),
        end("bounced", "bounced"),
    ])
    assert_problem(problems, "check", "`default` is only allowed as the final condition")


def test_default_inside_expression(problems_of) -> None:
    problems = problems_of([
        steps.branch(id="check", conditions=[
            Condition(when="default && contact.bounced", goto="bounced"),
            Condition(when="default", goto="done"),
        ]),
        end("done"),
        end("bounced", "bounced"),
    ])
    assert_problem(problems, "check", "`default` must be the whole condition")


def test_goto_unknown_step(problems_of) -> None:
    problems = problems_of([
        steps.branch(id="check", conditions=[
            Condition(when="contact.bounced", goto="nowhere"),
            Condition(when="default", goto="done"),
        ]),
        end("done"),
    ])
    assert_problem(problems, "check", "goto to unknown step 'nowhere'")


# --- explicit edges ---


def test_edge_to_unknown_step(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done")],
        transitions.explicit([Edge(from_="first", to="ghost")]),
    )
    assert_problem(problems, "first", "edge to unknown step 'ghost'")


def test_edge_from_unknown_step(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done")],
        transitions.explicit([Edge(from_="first", to="done"), Edge(from_="ghost", to="done")]),
    )
    assert_problem(problems, "ghost", "edge from unknown step 'ghost'")


def test_edges_out_of_branch(problems_of) -> None:
    problems = problems_of(
        [
            day_wait("first"),
            steps.branch(id="check", conditions=[Condition(when="default", goto="done")]),
            end("done"),
        ],
        transitions.explicit([Edge(from_="first", to="check"), Edge(from_="check", to="done")]),
    )
    assert_problem(problems, "check", "a branch's successors come from its conditions")


def test_edges_out_of_end(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done"), end("after")],
        transitions.explicit([Edge(from_="first", to="done"), Edge(from_="done", to="after")]),
    )
    assert_problem(problems, "done", "an end step cannot have outgoing edges")


def test_conditional_edges_without_final_unconditional_edge(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("bounced", "bounced"), end("done")],
        transitions.explicit([
            Edge(from_="first", to="bounced", condition="contact.bounced"),
            Edge(from_="first", to="done", condition="contact.unsubscribed"),
        ]),
    )
    assert_problem(problems, "first", "conditional edges need a final edge without a condition")


def test_unconditional_edge_before_the_last(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("a"), end("b")],
        transitions.explicit([Edge(from_="first", to="a"), Edge(from_="first", to="b")]),
    )
    assert_problem(problems, "first", "the edge to 'a' has no condition but is not the last")


def test_conditional_edges_with_final_unconditional_edge_are_accepted(build) -> None:
    plan = build(
        [day_wait("first"), end("bounced", "bounced"), end("done")],
        transitions.explicit([
            Edge(from_="first", to="bounced", condition="contact.bounced"),
            Edge(from_="first", to="done"),
        ]),
    )
    assert plan.transitions.mode == "explicit"


def test_linear_transitions_with_edges(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done")],
        Transitions(mode="linear", edges=(Edge(from_="first", to="done"),)),
    )
    assert_problem(problems, None, "linear transitions take no edges")


# --- conditions (SPEC 3.3) ---


def branch_on(when: str) -> list[Step]:
    return [
        email("intro"),
        steps.branch(id="check", conditions=[
            Condition(when=when, goto="special"),
            Condition(when="default", goto="done"),
        ]),
        end("done"),
        end("special", "special"),
    ]


def test_condition_that_does_not_parse(problems_of) -> None:
    problems = problems_of(branch_on("contact.bounced &&"))
    assert_problem(problems, "check", "does not parse")


def test_condition_naming_unknown_step(problems_of) -> None:
    problems = problems_of(branch_on('events.hasReply("ghost")'))
    assert_problem(problems, "check", "names unknown step 'ghost'")


def test_call_outcome_naming_unknown_step(problems_of) -> None:
    problems = problems_of(branch_on('call.outcome("ghost") == "answered"'))
    assert_problem(problems, "check", "names unknown step 'ghost'")


def test_condition_with_unknown_variable(problems_of) -> None:
    problems = problems_of(branch_on("customer.vip == true"))
    assert_problem(problems, "check", "unknown variable `customer`")


def test_condition_with_unknown_function(problems_of) -> None:
    problems = problems_of(branch_on("launch(contact.id)"))
    assert_problem(problems, "check", "function `launch` is not allowed")


def test_condition_on_edge_is_checked(problems_of) -> None:
    problems = problems_of(
        [email("intro"), end("opened", "opened"), end("done")],
        transitions.explicit([
            Edge(from_="intro", to="opened", condition='events.hasOpen("ghost")'),
            Edge(from_="intro", to="done"),
        ]),
    )
    assert_problem(problems, "intro", "names unknown step 'ghost'")


def test_valid_conditions_are_accepted(build) -> None:
    plan = build(branch_on(
        'events.hasOpen("intro") && events.count("email.opened") >= 2 '
        'or contact.attributes.tier == "gold" and not variables.vip'
    ))
    assert HEX64.fullmatch(plan.checksum)


def test_exit_condition_problems_have_no_step(problems_of) -> None:
    problems = problems_of(
        [day_wait("first"), end("done")],
        exits=[
            ExitCondition(when="contact.unsubscribed", outcome="unsubscribed"),
            ExitCondition(when="customer.gone", outcome="gone"),
            ExitCondition(when='events.hasReply("ghost")', outcome="replied"),
            ExitCondition(when="contact.bounced ||", outcome="bounced"),
            ExitCondition(when="default", outcome="always"),
        ],
    )
    assert_problem(problems, None, "exit condition 'customer.gone': unknown variable `customer`")
    assert_problem(problems, None, "names unknown step 'ghost'")
    assert_problem(problems, None, "exit condition 'contact.bounced ||': does not parse")
    assert_problem(problems, None, "exit condition 'default'")
    assert not any("contact.unsubscribed" in p.message for p in problems), problems
    assert all(p.step_id is None for p in problems), problems


# --- templates and scripts ---


def test_unknown_email_template(problems_of) -> None:
    problems = problems_of([email("intro", template_id="tmpl_missing"), end()])
    assert_problem(problems, "intro", "unknown email template 'tmpl_missing'")


def test_unknown_call_script(problems_of) -> None:
    problems = problems_of([steps.send_voice(id="call", script_id="script_missing"), end()])
    assert_problem(problems, "call", "unknown call script 'script_missing'")


def test_unknown_voicemail_message(problems_of) -> None:
    problems = problems_of([
        steps.send_voice(id="call", script_id="script_call",
                         voicemail=Voicemail(detect=True, message_id="vm_missing")),
        end(),
    ])
    assert_problem(problems, "call", "unknown voicemail message 'vm_missing'")
    assert not has_problem(problems, "call", "unknown call script")


def test_script_id_is_not_a_voicemail_id(problems_of) -> None:
    # scripts and voicemail messages are separate kinds: a voicemail id is not a call script
    problems = problems_of([steps.send_voice(id="call", script_id="vm_message"), end()])
    assert_problem(problems, "call", "unknown call script 'vm_message'")


# --- plan-level rules ---


def test_more_than_max_steps(problems_of, build) -> None:
    four = [day_wait("w1"), day_wait("w2"), day_wait("w3"), end("done")]
    problems = problems_of(four, max_steps=3)
    assert_problem(problems, None, "the plan has 4 steps; the maximum is 3")
    # exactly at the limit is fine
    assert len(build(four[1:], max_steps=3).steps) == 3


def test_default_max_steps_is_200(problems_of, build) -> None:
    chain = [day_wait(f"w{i}") for i in range(200)]
    assert len(build(chain).steps) == 200
    problems = problems_of([*chain, end("done")])
    assert_problem(problems, None, "the plan has 201 steps; the maximum is 200")


def test_large_plan_within_a_raised_limit(build) -> None:
    """A plan longer than Python's recursion limit must validate when max_steps allows it."""
    chain = [email(f"m{i}") for i in range(1500)]
    plan = build(chain, max_steps=2000)
    assert len(plan.steps) == 1500


def test_empty_plan(problems_of) -> None:
    problems = problems_of([])
    assert_problem(problems, None, "the plan has no steps")


def test_plan_without_id(problems_of) -> None:
    problems = problems_of([end()], plan_id="")
    assert_problem(problems, None, "the plan has no id")


# --- all problems at once ---


def test_every_problem_is_listed_at_once(problems_of) -> None:
    step_list = [
        email("intro", template_id="tmpl_missing"),
        day_wait("pause"),
        day_wait("pause"),
        steps.branch(id="check", conditions=[Condition(when="contact.bounced", goto="done")]),
        end("done"),
    ]
    with pytest.raises(PlanValidationError) as info:
        create_plan("multi", "Multi", step_list,
                    plugins=PluginManager.load(),
                    templates=MemoryTemplateStore({"email": {"tmpl_intro": {"text": "x"}}}))
    error = info.value
    assert error.plan_id == "multi"
    assert_problem(error.problems, "intro", "unknown email template 'tmpl_missing'")
    assert_problem(error.problems, "pause", "duplicate step id")
    assert_problem(error.problems, "check", "needs a final `default`")
    assert len(error.problems) == 3, error.problems
    message = str(error)
    for step_id in ("intro", "pause", "check"):
        assert step_id in message
    assert "3 problems" in message


# --- checksums and versions ---


def outreach_steps(subject: str = "Hello {{ contact.first_name }}") -> list[Step]:
    return [
        steps.send_email(id="intro", template_id="tmpl_intro", subject=subject,
                         tracking=Tracking(opens=True, clicks=True)),
        steps.wait(id="wait-1", duration=Duration(days=3)),
        steps.branch(id="check", conditions=[
            Condition(when='events.hasReply("intro")', goto="replied"),
            Condition(when='events.hasOpen("intro")', goto="follow-up"),
            Condition(when="default", goto="call"),
        ]),
        steps.send_email(id="follow-up", template_id="tmpl_follow_up", subject="Following up"),
        steps.send_voice(id="call", script_id="script_call", caller_id="+15550100",
                         max_duration=Duration(minutes=5),
                         voicemail=Voicemail(detect=True, message_id="vm_message")),
        end("no-reply", "no_response"),
        end("replied", "replied"),
    ]


def outreach_transitions() -> Transitions:
    return transitions.explicit([
        Edge(from_="intro", to="wait-1"),
        Edge(from_="wait-1", to="check"),
        Edge(from_="follow-up", to="no-reply"),
        Edge(from_="call", to="no-reply"),
    ])


OUTREACH_EXITS = [
    ExitCondition(when="contact.unsubscribed", outcome="unsubscribed"),
    ExitCondition(when="events.hasReply(any)", outcome="replied"),
]


def test_builders_produce_a_checksummed_plan(build) -> None:
    plan = build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach")
    assert HEX64.fullmatch(plan.checksum), plan.checksum
    assert plan.version is None  # versions come from a registry, not from create_plan
    assert plan.transitions.mode == "explicit"
    # params are kept in canonical form: defaults (detect=True) are omitted
    assert plan.step("call").params["voicemail"] == {"messageId": "vm_message"}


def test_same_content_same_checksum(build) -> None:
    first = build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach")
    second = build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach")
    assert first is not second
    assert first.checksum == second.checksum


@pytest.mark.parametrize("change", ["subject", "name", "exit", "edge"])
def test_different_content_different_checksum(build, change: str) -> None:
    base = build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach")
    step_list, trans, exits, name = outreach_steps(), outreach_transitions(), list(OUTREACH_EXITS), "Test plan"
    if change == "subject":
        step_list = outreach_steps(subject="Another subject")
    elif change == "name":
        name = "Renamed"
    elif change == "exit":
        exits = exits[:1]
    else:
        trans = transitions.explicit([*trans.edges[:-1], Edge(from_="call", to="replied")])
    other = build(step_list, trans, exits, plan_id="outreach", name=name)
    assert other.checksum != base.checksum


def test_registry_versions_by_content(build) -> None:
    registry = PlanRegistry()
    first = registry.register(build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach"))
    assert first.version == 1

    again = registry.register(build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="outreach"))
    assert again.version == 1
    assert again.checksum == first.checksum

    changed = registry.register(build(outreach_steps(subject="New subject"), outreach_transitions(),
                                      OUTREACH_EXITS, plan_id="outreach"))
    assert changed.version == 2
    assert changed.checksum != first.checksum

    # the old content keeps its version after a newer one exists
    assert registry.register(build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS,
                                   plan_id="outreach")).version == 1
    assert registry.get("outreach", 1).checksum == first.checksum
    assert registry.get("outreach", 2).checksum == changed.checksum
    assert registry.latest("outreach").version == 2

    # versions are per plan id
    other = registry.register(build(outreach_steps(), outreach_transitions(), OUTREACH_EXITS, plan_id="other"))
    assert other.version == 1


def test_registry_refuses_unvalidated_plans() -> None:
    unchecked = Plan(id="raw", name="Raw", steps=(end(),))
    with pytest.raises(ValueError):
        PlanRegistry().register(unchecked)
