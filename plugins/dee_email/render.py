"""Email rendering: the kernel's template sandbox, deterministic headers and tracking.

Rendering runs inside the kernel, so it must be a pure function of the context and the template
text (`dee.kernel.render`: sandboxed, budgeted, HTML autoescaped). An undefined variable raises,
failing the step: no silent blanks in a customer email.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from html import unescape as html_unescape
from typing import Any
from urllib.parse import quote

import msgspec

from dee.errors import TemplateError
from dee.plugin.contracts import StepContext, render_template, strip_signatures, template_namespace

_HREF = re.compile(r'href="(https?://[^"]+)"')
MAX_SUBJECT = 998  # RFC 5322's limit of a header line


def render_subject(source: str, namespace: dict[str, Any], what: str) -> str:
    """A subject is one header line: no line break (a header injection), at most 998 characters."""
    subject = render_template(source, namespace, what)
    if "\r" in subject or "\n" in subject:
        raise TemplateError(f"{what}: the subject contains a line break")
    if len(subject) > MAX_SUBJECT:
        raise TemplateError(f"{what}: the subject has {len(subject):,} characters, more than {MAX_SUBJECT}")
    return subject


def template_variables(ctx: StepContext, unsubscribe_url: str) -> dict[str, Any]:
    """The render namespace of an email: the step's, and its `unsubscribe_url`."""
    return template_namespace(ctx, unsubscribe_url=unsubscribe_url)


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


def add_tracking(
    html: str, token: Callable[..., str], domain: str, opens: bool, clicks: bool, unsubscribe_url: str = ""
) -> str:
    """Wrap the links for click tracking, each with a token signed for its URL (so the ingress
    redirects only where the email pointed), not the unsubscribe link (a click on it is not
    interest), and add the open pixel. Links are unescaped first: `&amp;` in an href is `&`."""
    if clicks:

        def wrap(m: re.Match[str]) -> str:
            url = html_unescape(m.group(1))
            if unsubscribe_url and url == unsubscribe_url:
                return m.group(0)
            return f'href="https://{domain}/c/{token("c", url)}?u={_quoted(url)}"'

        html = _HREF.sub(wrap, html)
    if opens:
        html += f'<img src="https://{domain}/o/{token("o")}" width="1" height="1" alt="">'
    return html


def content_hash(message: dict[str, Any]) -> str:
    """SHA-256 of the message without its link tokens' signatures: what was written, whichever
    key signed the links (a key rotation changes no content hash, and replay stays identical)."""
    return hashlib.sha256(strip_signatures(msgspec.json.encode(message, order="sorted").decode()).encode()).hexdigest()
