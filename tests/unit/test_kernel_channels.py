"""Channel steps in the kernel (SPEC section 6): dispatch, results, retries per error kind,
bounces, idempotency keys, rendering failures, voice outcomes and the email message itself."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dee.errors import TemplateError
from dee.kernel import tokens
from dee.kernel.effects import ContactFlagged, DispatchRequest
from dee.kernel.idempotency import idempotency_key, message_id
from dee.kernel.inputs import ChannelResult, Pause, Resume
from dee.kernel.retry import RetryPolicy
from dee.kernel.state import StepResult
from dee.plan import steps, transitions
from dee.plan.model import Condition, Duration, Edge, ExitCondition, Tracking, Voicemail
from dee_email.render import _quoted
from tests.unit.kernel_helpers import (
    HOUR,
    INTRO_HTML,
    Driver,
    compile_plan,
    make_contact,
    spec_key,
    template_store,
)

HEX64 = set("0123456789abcdef")


def _email_plan(
    tracking: Tracking | None = None, template_id: str = "tmpl_intro", subject: str = "{{ product }} for {{ contact.company }}",
    templates=None, exits=(),
):
    return compile_plan(
        [steps.send_email("mail", template_id, subject, tracking=tracking), steps.end("done", "sent")],
        exits=exits, templates=templates,
    )


def _sent(start_tick: int = 0, **driver_args) -> Driver:
    """A run that has just dispatched its email at `start_tick`."""
    d = Driver(_email_plan(), start_tick=start_tick, **driver_args)
    d.feed(now=start_tick)
    assert d.state.status == "waiting"
    assert len(d.outstanding) == 1
    return d


# ---- delivered ---------------------------------------------------------------------------------


def test_delivered_result_executes_the_step_and_goes_on() -> None:
    d = _sent(start_tick=5)
    request = d.outstanding[0]
    d.deliver(9)
    assert d.state.status == "completed"
    assert d.state.outcome == "sent"
    assert d.state.dispatch is None
    assert d.result_of("mail") == StepResult(
        "mail", "sendEmail", 5, "delivered",
        idempotency_key=request.idempotency_key, content_hash=d.of("step.dispatched")[0].output["contentHash"],
    )
    assert d.actions() == [
        (5, "run.started", None),
        (5, "step.entered", "mail"),
        (5, "step.dispatched", "mail"),
        (9, "step.executed", "mail"),
        (9, "step.entered", "done"),
        (9, "step.executed", "done"),
        (9, "run.completed", "done"),
    ]
    executed = d.of("step.executed")[0]
    assert executed.input is not None and executed.input["idempotencyKey"] == request.idempotency_key
    assert d.transitions == [("pending", "active"), ("active", "waiting"), ("waiting", "active"),
                             ("active", "completed")]


def test_dispatch_request_and_dispatched_entry_agree() -> None:
    d = _sent(start_tick=3)
    request = d.outstanding[0]
    assert isinstance(request, DispatchRequest)
    assert (request.run_id, request.step_id, request.channel, request.attempt, request.tick) == (
        "run-1", "mail", "email", 1, 3)
    assert d.of("step.dispatched")[0].output == {
        "channel": "email",
        "idempotencyKey": request.idempotency_key,
        "messageId": request.message_id,
        "contentHash": hashlib.sha256(msgspec.json.encode(request.message, order="sorted")).hexdigest(),
        "attempt": 1,
    }
    assert d.state.dispatch is not None and d.state.dispatch.idempotency_key == request.idempotency_key


# ---- idempotency keys ---------------------------------------------------------------------------


def test_idempotency_key_is_sha256_of_run_step_and_tick() -> None:
    d = _sent(start_tick=1234, run_id="run-abc")
    request = d.outstanding[0]
    expected = hashlib.sha256(b"run-abc|mail|1234").hexdigest()
    assert request.idempotency_key == expected
    assert idempotency_key("run-abc", "mail", 1234) == expected
    assert spec_key("run-abc", "mail", 1234) == expected
    assert request.message_id == f"<{expected[:32]}.run-abc@dee.local>"
    assert request.message_id == message_id(expected, "dee.local", request.run_id)


def test_keys_differ_by_run_and_step_and_tick() -> None:
    keys = {
        _sent(start_tick=0, run_id="r1").outstanding[0].idempotency_key,
        _sent(start_tick=0, run_id="r2").outstanding[0].idempotency_key,
        _sent(start_tick=1, run_id="r1").outstanding[0].idempotency_key,
    }
    assert len(keys) == 3


def test_message_domain_names_the_message_id() -> None:
    d = _sent(start_tick=0, message_domain="mail.example.com")
    request = d.outstanding[0]
    assert request.message_id == f"<{request.idempotency_key[:32]}.{request.run_id}@mail.example.com>"
    assert request.message["headers"]["Message-ID"] == request.message_id


# ---- transient failures --------------------------------------------------------------------------


def test_transient_failure_backs_off_30_then_60_seconds_then_fails_after_three_attempts() -> None:
    d = _sent(start_tick=0)
    first = d.fail_next(5, "transient", "connection reset")
    assert d.state.status == "waiting"
    assert d.state.wake_tick == 35
    assert d.entries[-1].action == "error.retried"
    assert d.entries[-1].tick == 5
    assert d.entries[-1].output == {"errorKind": "transient", "error": "connection reset", "attempt": 1,
                                    "nextTick": 35}

    quiet = d.feed(now=34)
    assert quiet.effects == [] and quiet.entries == []
    d.feed(now=35)
    second = d.outstanding[0]
    assert (second.attempt, second.tick) == (2, 35)
    assert second.idempotency_key == first.idempotency_key
    assert second.message_id == first.message_id
    assert second.message == first.message
    assert d.entries[-1].action == "step.dispatched" and d.entries[-1].output["attempt"] == 2

    d.fail_next(40, "transient", "connection reset")
    assert d.state.wake_tick == 100  # 60 s after the second failure
    assert d.entries[-1].output["nextTick"] == 100
    d.feed(now=100)
    third = d.outstanding[0]
    assert (third.attempt, third.idempotency_key) == (3, first.idempotency_key)

    d.fail_next(101, "transient", "connection reset")
    assert d.state.status == "failed"
    assert d.state.dispatch is None and d.state.wake_tick is None
    assert d.result_of("mail").outcome == "failed"
    assert d.result_of("mail").idempotency_key == first.idempotency_key
    assert d.actions(since=-2) == [(101, "step.executed", "mail"), (101, "run.failed", "mail")]
    assert d.entries[-2].output["result"]["outcome"] == "failed"
    assert d.entries[-2].output["attempts"] == 3
    assert d.entries[-2].output["errorKind"] == "transient"
    assert [e.output["nextTick"] for e in d.of("error.retried")] == [35, 100]
    assert [r.attempt for r in d.dispatches()] == [1, 2, 3]


def test_transient_backoff_in_ticks_of_a_minute() -> None:
    d = _sent(start_tick=0, tick_interval_ms=60_000)
    d.fail_next(0, "transient")
    assert d.state.wake_tick == 1  # 30 s rounded up to one tick
    d.feed(now=1)
    d.fail_next(1, "transient")
    assert d.state.wake_tick == 2  # 60 s


def test_a_transient_failure_then_success_continues_with_the_same_key() -> None:
    d = _sent(start_tick=0)
    first = d.fail_next(2, "transient")
    d.feed(now=32)
    d.deliver(33)
    assert d.state.status == "completed"
    assert d.result_of("mail").idempotency_key == first.idempotency_key
    assert d.result_of("mail").tick == 0  # the step's execution began at 0


# ---- permanent failures, rate limits, bounces ----------------------------------------------------


def test_permanent_failure_fails_immediately() -> None:
    d = _sent(start_tick=0)
    d.fail_next(4, "permanent", "554 rejected")
    assert d.state.status == "failed"
    assert d.of("error.retried") == []
    assert len(d.dispatches()) == 1
    assert d.result_of("mail").outcome == "failed"
    assert d.entries[-1].action == "run.failed"
    assert d.entries[-1].output == {"error": "permanent: 554 rejected"}
    assert d.transitions[-2:] == [("waiting", "active"), ("active", "failed")]


def test_a_failure_without_error_kind_is_permanent() -> None:
    d = _sent(start_tick=0)
    key = d.take_outstanding()[0].idempotency_key
    d.feed(ChannelResult(3, key, "failed", error="??"))
    assert d.state.status == "failed"
    assert d.of("error.retried") == []


def test_rate_limited_retries_next_tick_without_consuming_attempts() -> None:
    d = _sent(start_tick=0)
    first = d.fail_next(5, "rate_limited", "429")
    assert d.state.wake_tick == 6
    assert d.entries[-1].output == {"errorKind": "rate_limited", "error": "429", "attempt": 1, "nextTick": 6}
    d.feed(now=6)
    again = d.outstanding[0]
    assert (again.attempt, again.idempotency_key, again.tick) == (1, first.idempotency_key, 6)
    d.fail_next(6, "rate_limited", "429")
    d.feed(now=7)
    assert d.outstanding[0].attempt == 1
    # the three transient attempts are all still there
    d.fail_next(7, "transient")
    assert d.state.wake_tick == 37
    d.feed(now=37)
    d.fail_next(37, "transient")
    assert d.state.wake_tick == 97
    d.feed(now=97)
    assert d.outstanding[0].attempt == 3
    d.deliver(98)
    assert d.state.status == "completed"
    assert [r.attempt for r in d.dispatches()] == [1, 1, 1, 2, 3]


def test_rate_limit_retries_are_capped_and_then_fail() -> None:
    d = _sent(start_tick=0, retry=RetryPolicy(rate_limit_retries=2))
    d.fail_next(1, "rate_limited", "429")
    d.feed(now=2)
    d.fail_next(2, "rate_limited", "429")
    d.feed(now=3)
    d.fail_next(3, "rate_limited", "429")
    assert d.state.status == "failed"
    assert [e.output["nextTick"] for e in d.of("error.retried")] == [2, 3]
    assert d.entries[-1].output == {"error": "rate_limited: 429"}


def test_a_retry_timer_keeps_its_tick_while_paused_and_fires_at_resume() -> None:
    d = _sent(start_tick=0)
    first = d.fail_next(5, "transient")
    d.feed(Pause(6))
    quiet = d.feed(now=100)
    assert quiet.effects == [] and d.state.wake_tick == 35
    d.feed(Resume(120))
    again = d.outstanding[0]
    assert (again.attempt, again.tick, again.idempotency_key) == (2, 120, first.idempotency_key)
    assert d.state.status == "waiting"


def test_soft_bounce_retries_every_8_hours_three_times_then_fails() -> None:
    d = _sent(start_tick=0)
    key = d.outstanding[0].idempotency_key
    t = 0
    for attempt in (1, 2, 3):
        d.fail_next(t, "soft_bounce", "452 mailbox full")
        assert d.state.status == "waiting"
        assert d.state.wake_tick == t + 8 * HOUR
        assert d.entries[-1].output["attempt"] == attempt
        t += 8 * HOUR
        d.feed(now=t)
        assert d.outstanding[0].attempt == attempt + 1
        assert d.outstanding[0].idempotency_key == key
    assert t == 24 * HOUR
    d.fail_next(t, "soft_bounce", "452 mailbox full")
    assert d.state.status == "failed"
    assert len(d.of("error.retried")) == 3
    assert [r.tick for r in d.dispatches()] == [0, 8 * HOUR, 16 * HOUR, 24 * HOUR]
    assert d.result_of("mail").outcome == "failed"


def test_hard_bounce_flags_the_contact_and_completes_undeliverable() -> None:
    d = _sent(start_tick=0)
    request = d.fail_next(12, "hard_bounce", "550 no such mailbox")
    assert d.state.status == "completed"
    assert d.state.outcome == "undeliverable"
    assert d.state.completed_tick == 12
    assert d.state.contact.bounced is True
    assert d.flags() == [ContactFlagged("c1", "bounced", 12)]
    assert d.result_of("mail").outcome == "bounced"
    assert d.result_of("mail").idempotency_key == request.idempotency_key
    assert d.of("error.retried") == []
    assert d.entries[-1].action == "run.completed"
    assert d.entries[-1].output == {"outcome": "undeliverable", "hardBounce": "mail"}
    assert [s for s, _ in d.entered()] == ["mail"]  # `done` is never entered


def test_hard_bounce_is_undeliverable_even_with_a_bounced_exit_condition() -> None:
    d = Driver(_email_plan(exits=[ExitCondition("contact.bounced", "bounced")]))
    d.feed(now=0)
    d.fail_next(1, "hard_bounce")
    assert d.state.outcome == "undeliverable"


def test_a_result_with_an_unknown_key_is_ignored() -> None:
    d = _sent(start_tick=0)
    state = d.state
    result = d.feed(ChannelResult(7, "not-a-key-of-this-run", "failed", error_kind="hard_bounce"))
    assert [(e.action, e.output) for e in result.entries] == [
        ("event.received", {"ignored": "no pending dispatch with this key"})]
    assert result.entries[0].input is not None
    assert result.effects == [] and result.transitions == []
    assert d.state.status == "waiting"
    assert d.state.dispatch == state.dispatch
    assert d.state.contact == state.contact
    assert d.state.results == state.results
    # the real answer still works afterwards
    d.deliver(8)
    assert d.state.outcome == "sent"


def test_a_second_result_for_an_answered_dispatch_is_ignored() -> None:
    d = Driver(compile_plan([steps.send_email("mail", "tmpl_intro", "Hi"), steps.wait("w", Duration(hours=1))]))
    d.feed(now=0)
    key = d.outstanding[0].idempotency_key
    d.deliver(1)
    assert d.state.status == "waiting"
    result = d.feed(ChannelResult(2, key, "delivered"))
    assert result.entries[0].output == {"ignored": "no pending dispatch with this key"}
    assert d.state.steps_completed == 1


# ---- rendering and contact problems --------------------------------------------------------------


def test_template_render_error_fails_the_run_naming_the_template() -> None:
    d = Driver(_email_plan(template_id="tmpl_broken"))
    d.feed(now=0)
    assert d.state.status == "failed"
    assert d.dispatches() == []
    assert d.actions() == [(0, "run.started", None), (0, "step.entered", "mail"), (0, "error.occurred", "mail"),
                           (0, "run.failed", "mail")]
    error = d.of("error.occurred")[0].output["error"]
    assert error.startswith(f"{TemplateError.__name__}: template tmpl_broken text:")
    assert "nickname" in error
    assert d.entries[-1].output == {"error": error}
    assert d.transitions == [("pending", "active"), ("active", "failed")]


def test_subject_render_error_names_the_subject() -> None:
    d = Driver(_email_plan(subject="{{ no_such_variable }}"))
    d.feed(now=0)
    assert d.state.status == "failed"
    error = d.of("error.occurred")[0].output["error"]
    assert "template tmpl_intro subject" in error
    assert "no_such_variable" in error


def test_contact_without_email_fails_the_step() -> None:
    d = Driver(_email_plan(), contact=make_contact(email=None))
    d.feed(now=0)
    assert d.state.status == "failed"
    assert d.dispatches() == []
    assert d.of("error.occurred")[0].output == {"error": "contact has no email address"}
    assert d.entries[-1].output == {"error": "contact has no email address"}


def test_contact_without_phone_fails_a_call() -> None:
    d = Driver(_voice_plan(), contact=make_contact(phone=None))
    d.feed(now=0)
    assert d.state.status == "failed"
    assert d.of("error.occurred")[0].output == {"error": "contact has no phone number"}


# ---- voice ----------------------------------------------------------------------------------------


def _voice_plan():
    return compile_plan(
        [
            steps.send_voice("call", "script_call", voicemail=Voicemail(detect=True, message_id="vm_intro")),
            steps.wait("w", Duration(hours=1)),
            steps.branch("after-call", [
                Condition('call.outcome("call") == "voicemail"', "end-vm"),
                Condition('call.outcome("call") == "answered"', "end-answered"),
                Condition("default", "end-other"),
            ]),
            steps.end("end-vm", "left_voicemail"),
            steps.end("end-answered", "talked"),
            steps.end("end-other", "no_contact"),
        ],
        transitions.explicit([Edge("call", "w"), Edge("w", "after-call")]),
    )


@pytest.mark.parametrize(
    ("call_outcome", "branch", "run_outcome"),
    [
        ("voicemail", "end-vm", "left_voicemail"),
        ("answered", "end-answered", "talked"),
        ("busy", "end-other", "no_contact"),
        ("no_answer", "end-other", "no_contact"),
    ],
)
def test_voice_outcome_is_the_step_outcome_and_visible_to_later_branches(call_outcome, branch, run_outcome) -> None:
    d = Driver(_voice_plan())
    d.feed(now=0)
    request = d.outstanding[0]
    assert request.channel == "voice"
    assert request.message["to"] == "+15550100"
    assert request.message["scriptId"] == "script_call"
    assert request.message["callId"] == request.message_id
    assert request.message["voicemail"] == {"detect": True, "messageId": "vm_intro", "twiml":
                                            '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry we missed you</Say></Response>'}
    d.deliver(30, respond=lambda r: {"status": "delivered", "outcome": call_outcome})
    assert d.result_of("call").outcome == call_outcome
    assert d.result_of("call").tick == 0
    d.run()
    assert d.result_of("after-call").outcome == f"branch:{branch}"
    assert d.state.outcome == run_outcome
    assert d.state.completed_tick == 30 + HOUR


def test_unknown_call_outcome_fails_the_run() -> None:
    d = Driver(_voice_plan())
    d.feed(now=0)
    d.deliver(3, respond=lambda r: {"status": "delivered", "outcome": "abducted"})
    assert d.state.status == "failed"
    assert d.of("error.occurred")[0].output == {"error": "unknown call outcome 'abducted'"}


# ---- the email message ----------------------------------------------------------------------------


def test_email_headers_and_tracking_when_tracking_is_on() -> None:
    d = Driver(_email_plan(tracking=Tracking(opens=True, clicks=True)))
    d.feed(now=0)
    request = d.outstanding[0]
    message = request.message
    ttl = 365 * 86_400  # the tokens' default lifetime in one-second ticks

    def token(kind: str, url: str = "") -> str:
        return tokens.make(b"", kind, request.run_id, "mail", "c1", ttl, url)

    assert message["to"] == "ada@example.com"
    assert message["subject"] == "DEE for Acme"
    assert message["headers"] == {
        "Message-ID": f"<{request.idempotency_key[:32]}.{request.run_id}@dee.local>",
        "List-Unsubscribe": f"<https://t.dee.local/u/{token('u')}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert f"Unsubscribe: https://t.dee.local/u/{token('u')}" in message["text"]
    html = message["html"]
    assert html.endswith(f'<img src="https://t.dee.local/o/{token("o")}" width="1" height="1" alt="">')
    link = token("c", "https://example.com/product")
    assert f'href="https://t.dee.local/c/{link}?u=https%3A%2F%2Fexample.com%2Fproduct"' in html
    assert 'href="https://example.com/product"' not in html


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["https:", "", "u.dee.local", "unsubscribe", "0123abcdef", "Zoë", "a b", "?x=1&y=2", "%2F", "ÄÖ9"]), max_size=6))
def test_a_tracked_link_is_quoted_exactly_as_urllib_quotes_it(segments: list[str]) -> None:
    """Tracking quotes a link's head once (cached) and appends a plain last segment as it is;
    the result must be urllib's `quote(url, safe="")` for any link."""
    url = "/".join(segments)
    assert _quoted(url) == quote(url, safe="")


def test_email_has_no_tracking_when_tracking_is_off() -> None:
    for tracking in (None, Tracking(opens=False, clicks=False)):
        d = Driver(_email_plan(tracking=tracking))
        d.feed(now=0)
        message = d.outstanding[0].message
        assert set(message["headers"]) == {"Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"}
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["html"] == ('<p>Hi Ada,</p><p><a href="https://example.com/product">DEE</a> for Acme</p>')
        assert "t.dee.local" not in message["html"]
        assert "<img" not in message["html"]


def test_opens_only_and_clicks_only_tracking() -> None:
    d = Driver(_email_plan(tracking=Tracking(opens=True, clicks=False)))
    d.feed(now=0)
    html = d.outstanding[0].message["html"]
    assert "<img src=\"https://t.dee.local/o/" in html and 'href="https://example.com/product"' in html
    d = Driver(_email_plan(tracking=Tracking(opens=False, clicks=True)))
    d.feed(now=0)
    html = d.outstanding[0].message["html"]
    assert "<img" not in html and 'href="https://t.dee.local/c/' in html


def test_tracking_domain_and_sender_come_from_settings() -> None:
    settings = {"email": {"tracking_domain": "trk.example.com", "unsubscribe_base": "https://ex.com/u",
                          "sender": {"email": "sales@example.com", "name": "Sam"}}}
    d = Driver(_email_plan(tracking=Tracking(opens=True, clicks=True)), settings=settings)
    d.feed(now=0)
    request = d.outstanding[0]
    message = request.message
    assert message["from"] == "sales@example.com"
    unsubscribe = tokens.make(b"", "u", request.run_id, "mail", "c1", 365 * 86_400)
    assert message["headers"]["List-Unsubscribe"] == f"<https://ex.com/u/{unsubscribe}>"
    assert f'src="https://trk.example.com/o/{tokens.make(b"", "o", request.run_id, "mail", "c1", 365 * 86_400)}"' in message["html"]


def test_content_hash_changes_when_the_template_text_changes() -> None:
    def content_hash(templates) -> str:
        d = Driver(_email_plan(templates=templates), templates=templates)
        d.feed(now=0)
        d.deliver(1)
        return d.result_of("mail").content_hash

    original = template_store()
    edited = template_store(tmpl_intro={"text": "Hi {{ contact.company }}, v2", "html": INTRO_HTML})
    first = content_hash(original)
    assert set(first) <= HEX64 and len(first) == 64
    assert content_hash(original) == first  # same content, same hash
    assert content_hash(edited) != first


def test_content_hash_changes_with_the_variables() -> None:
    hashes = set()
    for product in ("DEE", "DEE2"):
        d = Driver(_email_plan(), variables={"product": product})
        d.feed(now=0)
        hashes.add(d.of("step.dispatched")[0].output["contentHash"])
    assert len(hashes) == 2


def test_a_delivery_during_the_retry_backoff_drops_the_retry_timer() -> None:
    """The adapter's answer for the failed attempt can still arrive (same key) while the retry
    waits: the step is then delivered and the run goes on; the retry timer of the old dispatch must
    not fire later and re-send the *next* step's message."""
    plan = compile_plan([
        steps.send_email("a", "tmpl_intro", "Hi"),
        steps.send_email("b", "tmpl_warm", "Again"),
        steps.wait("w", Duration(hours=1)),
    ])
    d = Driver(plan)
    d.feed(now=0)
    first = d.fail_next(5, "transient", "timeout")
    assert d.state.wake_tick == 35
    d.feed(ChannelResult(10, first.idempotency_key, "delivered"))
    assert d.result_of("a").outcome == "delivered"
    assert [(r.step_id, r.attempt, r.tick) for r in d.dispatches()] == [("a", 1, 0), ("b", 1, 10)]
    assert d.state.current_step == "b"
    assert (d.state.timer, d.state.wake_tick) == (None, None)  # waiting for b's result only
    late = d.feed(now=35)
    assert late.entries == [] and late.effects == [] and late.transitions == []
    assert [(r.step_id, r.attempt, r.tick) for r in d.dispatches()] == [("a", 1, 0), ("b", 1, 10)]
