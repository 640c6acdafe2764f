"""Templates that cannot hurt (dee.kernel.render): sandboxed, deterministic, budgeted by count
(never by clock), HTML autoescaped, checked when a plan is created; call scripts as TwiML."""

from __future__ import annotations

import pytest

from dee import PlanValidationError, create_plan, steps
from dee.errors import TemplateError
from dee.kernel.render import MAX_OUTPUT, check, globals_of, render
from dee.project.templates import MemoryTemplateStore
from dee_voice import twiml


def ns(**values: object) -> dict[str, object]:
    return {**globals_of(), **values}


@pytest.mark.parametrize(("source", "says"), [
    ("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}",
     "loop iterations and calls"),
    ("{{ 'x' * 100000000 }}", "characters"),
    ("{{ 'x'.ljust(1000000000) }}", "characters"),
    ("{{ '%999999999d' % 1 }}", "format width"),
    ("{{ '{:>999999999}'.format(1) }}", "format width"),
    ("{{ ('a' * 200000)|replace('a', 'bbbbbbbbbb') }}", "characters"),
    ("{% for i in range(19000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}", "characters"),
    ("{{ 2 ** 100000 }}", "exponent"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
])  # fmt: skip
def test_a_template_over_the_budget_fails_the_render(source: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        render(source, ns(), "hostile")
    with pytest.raises(TemplateError, match=says):  # and the same way every time (replay)
        render(source, ns(), "hostile")


def test_what_is_not_deterministic_or_could_escape_is_not_there() -> None:
    for source in ("{{ [1, 2]|random }}", "{{ lipsum(5) }}", "{% set n = namespace(a=1) %}{{ n.a }}", "{{ ''.__class__ }}",
                   "{{ cycler(1, 2).next() }}"):  # fmt: skip
        with pytest.raises(TemplateError):
            render(source, ns(), "not offered")


def test_html_is_autoescaped_and_text_is_not() -> None:
    hostile = {"name": "<script>alert(1)</script>"}
    assert render("<p>{{ contact.name }}</p>", ns(contact=hostile), "x", html=True) == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert render("{{ contact.name }}", ns(contact=hostile), "x") == "<script>alert(1)</script>"


def test_a_render_within_the_budget_is_whole() -> None:
    out = render("{% for i in range(100) %}{{ i }},{% endfor %}{{ 'y' * 1000 }}", ns(), "fine")
    assert out.startswith("0,1,2,") and out.endswith("y" * 1000) and len(out) < MAX_OUTPUT


def test_a_broken_template_is_a_plan_problem_at_creation() -> None:
    templates = MemoryTemplateStore({"email": {"t": {"text": "Hi {{ contact.first_name ", "html": "<p>{% if %}</p>"}}})
    with pytest.raises(PlanValidationError) as caught:
        create_plan("p", "P", [steps.send_email(id="mail", template_id="t", subject="{{ oops")], templates=templates)
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 3 and all(p.startswith("mail:") for p in problems)
    assert any("subject" in p for p in problems) and any("html" in p for p in problems)
    assert check("{{ fine }}", "x") is None


def test_a_call_script_is_rendered_to_escaped_twiml_with_its_branches() -> None:
    script = {
        "kind": "script", "greeting": "Hi {{ contact.name }}, this is {{ sender.name }}.",
        "steps": [{"say": "One & two"}, {"pause": 1},
                  {"gather": {"prompt": "Press 1", "options": {"1": "yes", "2": "no"},
                              "branches": {"1": [{"say": "Great"}], "2": [{"hangup": True}]}}}],
    }  # fmt: skip
    assert twiml.problems(script, "s") == []
    out = twiml.render_script(script, ns(contact={"name": "<Ann>"}, sender={"name": "Acme"}), "s", "https://in.test/gather")
    assert out["twiml"] == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi &lt;Ann&gt;, this is Acme.</Say><Say>One &amp; two</Say>'
        '<Pause length="1" /><Gather input="dtmf" numDigits="1" timeout="5" action="https://in.test/gather">'
        "<Say>Press 1</Say></Gather></Response>"
    )
    assert out["branches"] == {"1": '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Great</Say></Response>',
                               "2": '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'}  # fmt: skip
    assert twiml.problems({"steps": [{"sing": "x"}, {"gather": {"options": {"1": "y"}, "branches": {"9": []}}}]}, "s") == [
        "s step 1: one of say, play, pause, gather, hangup", "s step 2: branch '9' is no option"]  # fmt: skip
