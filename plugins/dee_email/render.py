"""Email rendering: sandboxed Jinja2, strict undefined, deterministic headers and tracking.

Rendering runs inside the kernel, so it must be a pure function of the context and the template
text: compiled templates are memoised by source (same source, same result), and nothing reads
the clock. An undefined variable raises, failing the step: no silent blanks in a customer email.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any
from urllib.parse import quote

import msgspec
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dee.errors import TemplateError
from dee.kernel.context import StepContext

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HREF = re.compile(r'href="(https?://[^"]+)"')


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return _ENV.from_string(source)


def render_text(source: str, namespace: dict[str, Any], what: str) -> str:
    """Render with `namespace` (from `template_variables`) as the template's whole context.

    `Template.render` would copy the variables and merge the environment's globals into them
    on every call; an email renders three times from the same namespace, which already holds
    the globals, so its renders share it (templates cannot write to it: assignments go to the
    render's own scope, and the sandbox makes values immutable)."""
    try:
        template = _compile(source)
        return "".join(template.root_render_func(template.new_context(namespace, shared=True)))
    except Exception as exc:  # jinja raises many types; all mean "this step cannot render"
        raise TemplateError(f"{what}: {type(exc).__name__}: {exc}") from exc


def template_variables(ctx: StepContext, unsubscribe_url: str) -> dict[str, Any]:
    """The render namespace: the environment's globals, the run's variables, then the names
    every template can use (which win over variables of the same name)."""
    contact = {**ctx.contact.attributes, **msgspec.to_builtins(ctx.contact)}
    previous = msgspec.to_builtins(ctx.previous_result) if ctx.previous_result else {}
    return {
        **_ENV.globals,
        **ctx.variables,
        "contact": contact,
        "variables": dict(ctx.variables),
        "sender": dict(ctx.settings.get("email", {}).get("sender", {})),
        "previous_step": previous,
        "run": {"id": ctx.run_id, "plan_id": ctx.plan_id, "plan_version": ctx.plan_version, "tick": ctx.step_tick},
        "unsubscribe_url": unsubscribe_url,
    }


@functools.lru_cache(maxsize=4096)
def _quoted_fixed(url: str) -> str:
    return quote(url, safe="")


def _quoted(url: str) -> str:
    """A link as a query value. Quoting works character by character, so a link whose last
    segment is plain ASCII letters and digits (the unsubscribe link's token, say) is its quoted
    head, from a cache (the same in every email), plus that segment as it is."""
    head, slash, tail = url.rpartition("/")
    if slash and tail.isascii() and tail.isalnum():
        return _quoted_fixed(head + slash) + tail
    return _quoted_fixed(url)


def add_tracking(html: str, token: str, domain: str, opens: bool, clicks: bool) -> str:
    if clicks:
        html = _HREF.sub(lambda m: f'href="https://{domain}/c/{token}?u={_quoted(m.group(1))}"', html)
    if opens:
        html += f'<img src="https://{domain}/o/{token}.gif" width="1" height="1" alt="">'
    return html


def content_hash(message: dict[str, Any]) -> str:
    return hashlib.sha256(msgspec.json.encode(message, order="sorted")).hexdigest()
