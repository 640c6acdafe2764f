"""The contracts a plugin implements. Built-in plugins use exactly these, nothing private.

A plugin returns instances of these classes from the hooks in `dee.plugin.hookspecs`. Step types,
policy gates and template stores run inside the pure kernel, so they must be deterministic: read only their
arguments, no clock, no I/O at evaluation time, no randomness. Channel adapters live in the shell
and may do I/O, but must honour the idempotency key.

The kernel owns the types a step type works with (its context, its outcomes, the inputs and
effects) and the template sandbox (`render_template`, `check_template`: see
`dee.kernel.render` for its budget); they are re-exported here so that a plugin imports from
one place and the kernel depends on no plugin code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import ChannelResult
from dee.kernel.outcomes import Done, Fail, Finish, Send, Sleep, StepOutcome
from dee.kernel.policy import Consent, GateRequest, PolicyFacts, PolicyGate, SentMark, Verdict
from dee.kernel.render import check as check_template
from dee.kernel.render import globals_of as template_globals
from dee.kernel.render import namespace_of as template_namespace
from dee.kernel.render import render as render_template
from dee.kernel.steps import StepType
from dee.kernel.tokens import make as link_token
from dee.kernel.tokens import strip_signatures
from dee.plan.spec import TemplateStore
from dee.plugin.webhooks import InboundEvent, PayloadError, SignatureError

__all__ = [
    "ChannelAdapter",
    "ChannelResult",
    "Consent",
    "DispatchRequest",
    "DispatchResponse",
    "Done",
    "Fail",
    "Finish",
    "GateRequest",
    "InboundEvent",
    "PayloadError",
    "PolicyFacts",
    "PolicyGate",
    "Send",
    "SentMark",
    "SignatureError",
    "Sleep",
    "StepContext",
    "StepOutcome",
    "StepType",
    "TemplateStore",
    "Verdict",
    "WebhookReceiver",
    "check_template",
    "link_token",
    "render_template",
    "strip_signatures",
    "template_globals",
    "template_namespace",
]  # fmt: skip


class DispatchResponse(msgspec.Struct, frozen=True, rename="camel"):
    status: str  # "delivered" | "failed"
    error_kind: str | None = None
    error: str | None = None
    outcome: str | None = None
    data: dict[str, Any] = {}
    retry_after_ms: int | None = None  # a `rate_limited` failure: how long to wait before the retry


@runtime_checkable
class ChannelAdapter(Protocol):
    """Sends on one channel. Must not send twice for one idempotency key: a repeated key returns
    the first answer. `name` is how config selects it (`channels.email.adapter = "simulated"`).
    An adapter that holds connections may also define `async def close()`: the engine calls it
    when it stops."""

    name: str
    channel: str

    async def send(self, request: DispatchRequest) -> DispatchResponse: ...


@runtime_checkable
class WebhookReceiver(Protocol):
    """Takes one provider's webhook at `POST /webhooks/{name}` on the ingress.

    `verify` checks that a request is authentic before a byte of it is read, with the provider's
    own algorithm (over the body exactly as received, the URL the provider called, and `now` in
    Unix seconds for freshness); it raises `SignatureError` with a short reason naming no secret
    for any other request. Only then `events` maps the body to the `InboundEvent`s it reports,
    raising `PayloadError` for a body that is not what the provider documents. Both run on the
    ingress's event loop: keep them quick and do no I/O. `provider_event_id` must be the
    provider's own id of the event: a redelivered webhook is then recognised as the same event.
    """

    name: str

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None: ...

    def events(self, headers: Mapping[str, str], body: bytes) -> list[InboundEvent]: ...

