"""What a plugin's webhook receiver (`dee_webhook_receivers`) works with, shared with the ingress's
built-in providers: the event it reports and the two refusals it may raise."""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

EventType = Literal[
    "email.delivered", "email.bounced", "email.complained", "email.opened", "email.clicked", "email.unsubscribed",
    "email.replied", "call.initiated", "call.ringing", "call.answered", "call.completed", "call.failed", "call.voicemail",
]  # fmt: skip
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
# the providers the ingress knows itself (`/webhooks/{name}`, Twilio's status callbacks): a plugin's
# webhook receiver takes another name
BUILT_IN_PROVIDERS = ("sendgrid", "mailgun", "ses", "postmark", "standard", "twilio")


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One provider event as DEE sees it (what becomes the wire `event` message's body)."""

    type: EventType
    provider_event_id: str
    message_id: str | None = None
    recipient: str | None = None
    data: dict[str, Any] = {}
    occurred_at: str | None = None


class PayloadError(ValueError):
    """A payload that is not what the provider documents; the reason is short and quotes no body."""


class SignatureError(ValueError):
    """A request that is not authentic, with a short reason that names no secret and no signature
    (it may be logged, and answered as the reason of a 4xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
