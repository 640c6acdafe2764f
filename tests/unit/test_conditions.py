"""The condition language (SPEC 3.3): what each expression means, and what the plan check rejects."""

from __future__ import annotations

import copy

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dee.errors import ConditionError
from dee.plan.conditions import (
    ANY_STEP,
    CompiledCondition,
    ConditionSnapshot,
    ConditionSyntaxError,
    VisibleEvent,
    compile_condition,
    condition_problems,
)

STEPS = {"initial-email", "follow-up", "call-attempt", "end-replied"}


def snapshot(*events: tuple[str, str | None], contact: dict | None = None, variables: dict | None = None,
             outcomes: dict | None = None, tick: int = 10) -> ConditionSnapshot:
    base = {"id": "c1", "email": "ann@example.com", "phone": "+15550100", "timezone": "UTC",
            "unsubscribed": False, "bounced": False, "attributes": {"tier": "silver"}}
    return ConditionSnapshot(
        contact={**base, **(contact or {})},
        variables=variables or {},
        events=tuple(VisibleEvent(type, step_id, 1) for type, step_id in events),
        call_outcomes=outcomes or {},
        tick=tick,
    )


def holds(source: str, snap: ConditionSnapshot) -> bool:
    return compile_condition(source).evaluate(snap)


# -- the SPEC 3.3 table, each expression true in one snapshot and false in another ------------

TABLE = [
    ('events.hasReply("initial-email")',
     snapshot(("email.replied", "initial-email")),
     snapshot(("email.replied", "follow-up"), ("email.opened", "initial-email"))),
    ('events.hasOpen("initial-email")',
     snapshot(("email.opened", "initial-email")),
     snapshot(("email.clicked", "initial-email"))),
    ('events.hasClick("follow-up")',
     snapshot(("email.clicked", "follow-up")),
     snapshot(("email.clicked", "initial-email"))),
    ('events.hasBounce("initial-email")',
     snapshot(("email.bounced", "initial-email")),
     snapshot(("email.replied", "initial-email"))),
    ("events.hasReply(any)", snapshot(("email.replied", "follow-up")), snapshot(("email.opened", "follow-up"))),
    ("events.hasOpen(any)", snapshot(("email.opened", None)), snapshot()),
    ("events.hasClick(any)", snapshot(("email.clicked", "x")), snapshot(("email.opened", "x"))),
    ("events.hasBounce(any)", snapshot(("email.bounced", "initial-email")), snapshot(("email.replied", "a"))),
    ('events.count("email.opened") >= 2',
     snapshot(("email.opened", "initial-email"), ("email.opened", "follow-up")),
     snapshot(("email.opened", "initial-email"), ("email.clicked", "initial-email"))),
    ('call.outcome("call-attempt") == "answered"',
     snapshot(outcomes={"call-attempt": "answered"}),
     snapshot(outcomes={"call-attempt": "voicemail"})),
    ("contact.unsubscribed", snapshot(contact={"unsubscribed": True}), snapshot()),
    ("contact.bounced", snapshot(contact={"bounced": True}), snapshot()),
    ('contact.attributes.tier == "gold"', snapshot(contact={"attributes": {"tier": "gold"}}), snapshot()),
    ("variables.x > 3", snapshot(variables={"x": 4}), snapshot(variables={"x": 3})),
    ("tick >= 10", snapshot(tick=10), snapshot(tick=9)),
]


@pytest.mark.parametrize(("source", "true_in", "false_in"), TABLE, ids=[row[0] for row in TABLE])
def test_table_expression_is_true_and_false_where_the_spec_says(source, true_in, false_in):
    condition = compile_condition(source)
    assert condition.evaluate(true_in) is True
    assert condition.evaluate(false_in) is False


def test_default_is_always_true_and_marked():
    condition = compile_condition("default")
    assert condition.is_default and condition.evaluate(snapshot()) is True
    assert not compile_condition("contact.bounced").is_default


def test_any_is_bound_to_a_sentinel_that_is_no_step_id():
    assert ANY_STEP.startswith("@")
    assert not holds('events.hasReply("@any") == false && events.hasReply(any)', snapshot())


def test_count_of_an_absent_type_is_zero():
    assert holds('events.count("email.replied") == 0', snapshot(("email.opened", "a")))


def test_call_outcome_is_null_when_nothing_was_recorded():
    assert holds('call.outcome("call-attempt") == null', snapshot())
    assert not holds('call.outcome("call-attempt") == null', snapshot(outcomes={"call-attempt": "busy"}))


def test_referenced_steps_are_sorted_and_deduplicated():
    condition = compile_condition(
        'events.hasReply("follow-up") || events.hasOpen("initial-email") || '
        'events.hasClick("follow-up") || call.outcome("call-attempt") == "x" || events.hasBounce(any)'
        ' || events.count("email.opened") > 1')
    assert condition.referenced_steps == ("call-attempt", "follow-up", "initial-email")


# -- and / or / not ----------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "expected_cel"), [
    ("contact.unsubscribed and contact.bounced", "contact.unsubscribed && contact.bounced"),
    ("contact.unsubscribed or contact.bounced", "contact.unsubscribed || contact.bounced"),
    ("not contact.bounced", "!(contact.bounced)"),
    ("not not contact.bounced", "!(!(contact.bounced))"),
    ("(not contact.bounced) or tick > 1", "(!(contact.bounced)) || tick > 1"),
])
def test_words_become_cel_operators(source, expected_cel):
    assert compile_condition(source).cel_source == expected_cel


def test_words_inside_string_literals_stay_untouched():
    for quoted in ['"gold and not silver or bronze"', "'gold and not silver'",
                   r'"say \" and not \" here"', '"""and "or" not"""', r"r'raw and not\'"]:
        source = f"contact.attributes.tier == {quoted} and not contact.bounced"
        condition = compile_condition(source)
        assert condition.cel_source == f"contact.attributes.tier == {quoted} && !(contact.bounced)"
    tier = "gold and not silver or bronze"
    gold = snapshot(contact={"attributes": {"tier": tier}})
    assert holds(f'contact.attributes.tier == "{tier}" and not contact.bounced', gold)
    assert not holds(f'contact.attributes.tier == "{tier}" and not contact.bounced', snapshot())


def test_words_after_a_dot_are_field_names():
    condition = compile_condition("variables.and > 1 or variables.not")
    assert condition.cel_source == "variables.and > 1 || variables.not"
    assert condition.evaluate(snapshot(variables={"and": 0, "not": True}))


def test_not_binds_looser_than_comparison_and_bang_keeps_cel_precedence():
    answered = snapshot(outcomes={"call-attempt": "answered"})
    assert not holds('not call.outcome("call-attempt") == "answered"', answered)
    assert holds('not call.outcome("call-attempt") == "answered"', snapshot())
    assert holds('not contact.bounced and contact.attributes.tier == "silver"', snapshot())
    with pytest.raises(ConditionError):  # CEL's `!` binds to the string, which has no `!`
        holds('!call.outcome("call-attempt") == "answered"', answered)


# -- condition_problems: one test per kind of problem ------------------------------------------

def problems(source: str, allow_default: bool = False) -> list[str]:
    return condition_problems(source, STEPS, allow_default=allow_default)


def test_a_valid_condition_has_no_problems():
    assert problems('events.hasReply("initial-email") and not contact.unsubscribed') == []
    assert problems("default", allow_default=True) == []


def test_syntax_error():
    [problem] = problems("contact.bounced &&")
    assert problem.startswith("does not parse")


def test_empty_condition_and_unclosed_string():
    assert problems("  ") == ["the condition is empty"]
    assert problems('contact.attributes.tier == "gold') == ["a string literal is not closed"]


def test_unknown_variable():
    assert problems("contact.bounced || customer.vip") == ["unknown variable `customer`"]


@pytest.mark.parametrize(("source", "name"), [
    ('contact.email.matches(".*@x")', "matches"),
    ("now() > 3", "now"),
    ('timestamp("2024-01-01T00:00:00Z") == timestamp("2024-01-01T00:00:00Z")', "timestamp"),
    ("[1, 2].exists(tick, tick > 1)", "exists"),
])
def test_disallowed_function(source, name):
    assert problems(source) == [f"function `{name}` is not allowed"]


def test_allowed_builtins_pass():
    assert problems('size(contact.email) > 3 && contact.email.endsWith("@example.com") '
                    '&& has(contact.attributes.tier) && int(variables.n) > 1') == []


@pytest.mark.parametrize("source", ['contact.hasReply("initial-email")', 'hasReply("initial-email")',
                                    'call.hasOpen("initial-email")', 'events.outcome("call-attempt") == "a"',
                                    'variables.events.hasReply("initial-email")'])
def test_function_on_the_wrong_receiver(source):
    assert any("must be called on" in p for p in problems(source)), problems(source)


@pytest.mark.parametrize("source", ["events == null", "events.size() > 0", "call.foo == 1"])
def test_events_and_call_are_only_receivers(source):
    assert any("can only be used to call" in p for p in problems(source)), problems(source)


@pytest.mark.parametrize("source", ["events.hasReply(variables.step)", 'events.hasReply("initial" + "-email")',
                                    "events.hasOpen()", 'events.hasOpen("initial-email", "follow-up")',
                                    "events.hasClick(b'initial-email')", 'call.outcome(any) == "x"'])
def test_step_argument_must_be_a_literal_or_any(source):
    assert any("must be a step id in quotes" in p for p in problems(source)), problems(source)


def test_count_argument_must_be_a_quoted_event_type():
    assert problems("events.count(tick) > 1") == [
        "the argument of events.count(...) must be an event type in quotes"]


def test_unknown_step_id():
    assert problems('events.hasReply("initial-emial")') == [
        "events.hasReply('initial-emial') names unknown step 'initial-emial'"]
    assert problems('call.outcome("nope") == "answered"') == [
        "call.outcome('nope') names unknown step 'nope'"]


def test_any_outside_a_step_argument():
    assert problems('any == "@any"') == [
        "`any` can only be the argument of events.hasReply/hasOpen/hasClick/hasBounce(...)"]


def test_default_where_not_allowed():
    assert problems("default", allow_default=False) == [
        "`default` is only allowed as the final condition of a branch"]


def test_default_inside_a_bigger_expression():
    assert problems("default || contact.bounced", allow_default=True) == [
        "`default` must be the whole condition, not part of a bigger expression"]


def test_problems_are_all_reported_not_just_the_first():
    assert len(problems('customer.vip && now() > 1 && events.hasReply("ghost")')) == 3


def test_compile_condition_raises_with_source_and_message():
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition("customer.vip")
    assert isinstance(caught.value, ValueError)
    assert caught.value.source == "customer.vip"
    assert caught.value.message == "unknown variable `customer`"


def test_compile_condition_leaves_step_ids_to_the_plan_check():
    assert compile_condition('events.hasReply("any-step")').referenced_steps == ("any-step",)


# -- runtime failures --------------------------------------------------------------------------

def test_missing_attribute_is_a_condition_error_naming_the_source():
    with pytest.raises(ConditionError, match=r"contact\.attributes\.vip.*missing key 'vip'"):
        holds("contact.attributes.vip == true", snapshot())


def test_has_guards_a_missing_attribute():
    assert not holds("has(contact.attributes.vip) && contact.attributes.vip", snapshot())


@pytest.mark.parametrize("source", ["variables.x", 'call.outcome("call-attempt")', "tick", "contact.attributes"])
def test_a_non_bool_result_is_a_condition_error(source):
    with pytest.raises(ConditionError, match="not true or false"):
        holds(source, snapshot(variables={"x": 1}))


def test_type_errors_are_condition_errors():
    with pytest.raises(ConditionError, match=r"variables\.x > 3"):
        holds("variables.x > 3", snapshot(variables={"x": "four"}))


def test_compiled_condition_is_immutable():
    condition = compile_condition("contact.bounced")
    assert isinstance(condition, CompiledCondition)
    with pytest.raises(AttributeError):
        condition.source = "true"  # type: ignore[misc]


def test_reading_only_some_keys_gives_the_same_answers_as_the_whole_map():
    """Evaluation binds only the key paths a condition selects; whole-value uses get everything."""
    snap = snapshot(contact={"attributes": {"tier": "gold", "n": 2}})
    assert holds('size(contact.attributes) == 2 && contact.attributes.tier == "gold"', snap)
    assert holds('"n" in contact.attributes && contact.attributes["n"] == 2', snap)
    assert holds("size(contact) == 7", snap)


# -- purity ------------------------------------------------------------------------------------

CONDITIONS = [compile_condition(source) for source in [
    'events.hasReply("initial-email") or events.hasOpen(any)',
    'events.count("email.opened") >= 2 and not contact.unsubscribed',
    'call.outcome("call-attempt") == "answered"',
    'contact.attributes.tier == "gold" || variables.x > 3',
    "tick > 5 && !contact.bounced",
]]

json_values = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from(["gold", "a"]),
                           lambda inner: st.dictionaries(st.sampled_from(["tier", "x", "n"]), inner, max_size=3),
                           max_leaves=6)
snapshots = st.builds(
    ConditionSnapshot,
    contact=st.fixed_dictionaries({"unsubscribed": st.booleans(), "bounced": st.booleans(),
                                   "attributes": st.dictionaries(st.sampled_from(["tier", "n"]), json_values)}),
    variables=st.dictionaries(st.sampled_from(["x", "y"]), json_values, max_size=2),
    events=st.lists(st.builds(VisibleEvent, type=st.sampled_from(["email.opened", "email.replied", "email.clicked"]),
                              step_id=st.sampled_from([None, "initial-email", "follow-up"]),
                              tick=st.integers(0, 20)), max_size=6).map(tuple),
    call_outcomes=st.dictionaries(st.just("call-attempt"), st.sampled_from(["answered", "voicemail"])),
    tick=st.integers(0, 20),
)


def outcome(condition: CompiledCondition, snap: ConditionSnapshot) -> object:
    try:
        return condition.evaluate(snap)
    except ConditionError as error:
        return ("error", str(error))


@settings(max_examples=200, deadline=None)
@given(snapshots)
def test_evaluation_is_a_pure_function_of_the_snapshot(snap):
    before = copy.deepcopy(snap)
    first = [outcome(c, snap) for c in CONDITIONS]
    again = [outcome(c, snap) for c in reversed(CONDITIONS)][::-1]
    fresh = [outcome(c, msgspec.convert(msgspec.to_builtins(snap), ConditionSnapshot)) for c in CONDITIONS]
    assert first == again == fresh
    assert snap == before
    assert all(isinstance(result, bool) or result[0] == "error" for result in first)


DIRECT_SOURCES = [
    *(f"events.{name}({arg})" for name in ("hasReply", "hasOpen", "hasClick", "hasBounce")
      for arg in ("any", '"initial-email"', '"follow-up"')),
    "contact.unsubscribed", "contact.bounced", " events.hasReply(any) ",
]  # fmt: skip
_event_types = st.sampled_from(["email.replied", "email.opened", "email.clicked", "email.bounced", "voice.completed"])
_event_steps = st.sampled_from(["initial-email", "follow-up", None, "call-attempt"])


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(_event_types, _event_steps), max_size=6), unsubscribed=st.booleans(), bounced=st.booleans())
def test_conditions_evaluated_without_cel_agree_with_cel(events: list[tuple[str, str | None]], unsubscribed: bool, bounced: bool) -> None:
    snap = snapshot(*events, contact={"unsubscribed": unsubscribed, "bounced": bounced})
    for source in DIRECT_SOURCES:
        condition = compile_condition(source)
        assert condition._direct is not None, f"{source} should take the direct path"
        through_cel = condition._program.execute(condition._bindings(snap))
        assert condition.evaluate(snap) is through_cel, source


def test_other_conditions_still_go_through_cel() -> None:
    for source in ('events.hasReply(any) or contact.bounced', "!contact.unsubscribed", "events.hasReply('follow-up')",
                   'events.hasOpen("a\\\\b")', "contact.attributes.tier == 'gold'"):  # fmt: skip
        assert compile_condition(source)._direct is None, source
