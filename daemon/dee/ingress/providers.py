"""Verified provider payloads as DEE events: one function per provider, `events_from_<provider>`.

Each takes the request body as received (bytes or str; a Twilio form may also come as its parsed
fields, and a JSON body as its decoded value) and returns the `InboundEvent`s it reports: none
for an event DEE does not act on (a provider's "processed", "deferred", "accepted", ...), which is
skipped, never an error. A payload that is not what the provider documents (not JSON, a list
where an object belongs, a relevant event without its id or recipient) raises `PayloadError`.

The functions are pure: they read only their argument. Call them only on a body whose
`dee.ingress.signatures` verifier has passed.

Every event has the provider's own id of it (`provider_event_id`), from which the ingress derives
a deterministic DEE event id (a redelivered webhook is the same event), the email's `Message-ID`
in angle brackets when the payload has it, the recipient, and `occurred_at` as an ISO 8601 UTC
time. `data` is what the kernel reads: `kind` ("hard" | "soft") and `reason` of a bounce (a hard
bounce flags the contact), `url` of a click, and `outcome`, `callSid` and `duration` of a call,
plus `provider_message_id` (the provider's own id of the email) where there is one.

SendGrid's engagement and complaint events and every Postmark event carry no Message-ID at all:
what names the email there is the sender's own tag, echoed on every event (SendGrid's custom
arguments, Postmark's metadata). DEE's is `dee_message_id` (`MESSAGE_ID_TAG`), the Message-ID.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from dee.ingress.signatures import is_sns_url

# the types a plugin's receiver shares, here for the built-in readers and their callers
from dee.plugin.webhooks import EVENT_TYPES as EVENT_TYPES
from dee.plugin.webhooks import EventType as EventType
from dee.plugin.webhooks import InboundEvent as InboundEvent
from dee.plugin.webhooks import PayloadError as PayloadError

CALL_OUTCOMES = ("answered", "voicemail", "no_answer", "busy", "failed", "declined")  # as `dee_voice` knows them
# the sender's tag holding the email's Message-ID, where a provider echoes tags but no Message-ID
# (a SendGrid custom argument, `X-SMTPAPI` unique_args over SMTP; Postmark metadata, `X-PM-Metadata-*`)
MESSAGE_ID_TAG = "dee_message_id"


# --- shared readers -----------------------------------------------------------------------------


def _json(payload: object) -> Any:
    if isinstance(payload, bytes | bytearray | memoryview | str):
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError:
            raise PayloadError("body is not JSON") from None
    return payload


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is not an object")
    return value


def _optional_object(parent: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return {} if value is None else _object(value, key)


def _required_str(parent: Mapping[str, Any], key: str, what: str) -> str:
    value = parent.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids that are numbers (Postmark's bounce ID)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{what} has no {key}")
    return value


def _optional_str(parent: Mapping[str, Any], key: str) -> str | None:
    value = parent.get(key)
    return value if isinstance(value, str) and value else None


def _from_unix(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError("a timestamp is not a Unix time")
    try:
        return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        raise PayloadError("a timestamp is not a Unix time") from None


def _from_iso(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError("a timestamp is not ISO 8601")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError("a timestamp is not ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def _angle(value: Any) -> str | None:
    """A Message-ID as `<...>` (Mailgun and SES may give it bare)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    return text if text.startswith("<") and text.endswith(">") else f"<{text.strip('<>')}>"


def _with(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """`data` with the extras that are not None."""
    data.update((key, value) for key, value in extra.items() if value is not None)
    return data


# --- SendGrid -----------------------------------------------------------------------------------

_SENDGRID_TYPES: dict[str, EventType] = {
    "delivered": "email.delivered", "bounce": "email.bounced", "dropped": "email.bounced", "spamreport": "email.complained",
    "open": "email.opened", "click": "email.clicked", "unsubscribe": "email.unsubscribed",
    "group_unsubscribe": "email.unsubscribed",
}  # fmt: skip
# drop reasons that mean SendGrid will never deliver to the address (its suppression lists)
_SENDGRID_PERMANENT_DROPS = ("bounced address", "invalid", "spam reporting address", "unsubscribed address")


def events_from_sendgrid(payload: object) -> list[InboundEvent]:
    """SendGrid's Event Webhook body: a JSON array of events (Twilio SendGrid docs, "Event Webhook
    Reference"), each with `event`, `email`, `timestamp`, `sg_event_id`, `sg_message_id` and, for
    delivery events, `smtp-id` (the Message-ID as SendGrid saw it, which it may have replaced with
    its own). Engagement events (open, click) and spam reports have no `smtp-id`: the Message-ID is
    the custom argument `dee_message_id`, which every event echoes and which is preferred when it is
    there. `bounce` of `type` "bounce" is a hard bounce and
    of `type` "blocked" a soft one; `dropped` (never sent) is hard when SendGrid dropped for a
    suppression (a bounced, invalid, spam-reporting or unsubscribed address), else soft.
    `processed`, `deferred` and `group_resubscribe` are skipped."""
    events = _json(payload)
    if not isinstance(events, list):
        raise PayloadError("a SendGrid body is a JSON array")
    out: list[InboundEvent] = []
    for item in events:
        event = _object(item, "a SendGrid event")
        kind = _SENDGRID_TYPES.get(str(event.get("event")))
        if kind is None:
            continue
        data: dict[str, Any] = {}
        name = event["event"]
        if name == "bounce":
            data = {"kind": "soft" if event.get("type") == "blocked" else "hard", "reason": _optional_str(event, "reason")}
        elif name == "dropped":
            reason = _optional_str(event, "reason") or ""
            data = {"kind": "hard" if reason.lower().startswith(_SENDGRID_PERMANENT_DROPS) else "soft", "reason": reason or None}
        elif name == "click":
            data = {"url": _required_str(event, "url", "a SendGrid click")}
        elif name == "group_unsubscribe":
            data = _with(data, group_id=event.get("asm_group_id"))
        elif name == "open" and "sg_machine_open" in event:
            data = {"machine_open": bool(event["sg_machine_open"])}
        out.append(InboundEvent(
            type=kind, provider_event_id=_required_str(event, "sg_event_id", "a SendGrid event"),
            message_id=_angle(event.get(MESSAGE_ID_TAG)) or _angle(event.get("smtp-id")),
            recipient=_required_str(event, "email", "a SendGrid event"),
            data=_with(data, provider_message_id=_optional_str(event, "sg_message_id")),
            occurred_at=_from_unix(event.get("timestamp")),
        ))  # fmt: skip
    return out


# --- Mailgun ------------------------------------------------------------------------------------

_MAILGUN_TYPES: dict[str, EventType] = {
    "delivered": "email.delivered", "failed": "email.bounced", "complained": "email.complained", "opened": "email.opened",
    "clicked": "email.clicked", "unsubscribed": "email.unsubscribed",
}  # fmt: skip


def events_from_mailgun(payload: object) -> list[InboundEvent]:
    """A Mailgun webhook body, `{"signature": {...}, "event-data": {...}}` (Mailgun docs, "Webhook
    Payloads"): one event, its `id` the provider's id, the Message-ID in
    `message.headers.message-id` (bare, without brackets). A `failed` event of `severity`
    "permanent" is a hard bounce, "temporary" a soft one; the reason is the delivery status's
    description or message, else Mailgun's `reason`. `accepted`, `rejected`, `stored` and the
    list events are skipped."""
    body = _object(_json(payload), "a Mailgun body")
    event = _object(body.get("event-data"), "event-data")
    kind = _MAILGUN_TYPES.get(str(event.get("event")))
    if kind is None:
        return []
    data: dict[str, Any] = {}
    if kind == "email.bounced":
        status = _optional_object(event, "delivery-status")
        reason = _optional_str(status, "description") or _optional_str(status, "message") or _optional_str(event, "reason")
        data = {"kind": "hard" if event.get("severity") == "permanent" else "soft", "reason": reason}
    elif kind == "email.clicked":
        data = {"url": _required_str(event, "url", "a Mailgun click")}
    headers = _optional_object(_optional_object(event, "message"), "headers")
    return [InboundEvent(
        type=kind, provider_event_id=_required_str(event, "id", "event-data"), message_id=_angle(headers.get("message-id")),
        recipient=_required_str(event, "recipient", "event-data"), data=data, occurred_at=_from_unix(event.get("timestamp")),
    )]  # fmt: skip


# --- Amazon SES through SNS ---------------------------------------------------------------------


def sns_subscribe_url(payload: object) -> str | None:
    """The `SubscribeURL` of an SNS `SubscriptionConfirmation` (to be visited once to confirm the
    subscription), when it is an https SNS URL; None for any other message. Only for a message
    `SnsVerifier` passed: visiting a URL from an unverified body would be a request forgery."""
    document = _object(_json(payload), "an SNS message")
    url = document.get("SubscribeURL")
    if document.get("Type") != "SubscriptionConfirmation" or not isinstance(url, str):
        return None
    return url if is_sns_url(url) else None


def events_from_ses(payload: object) -> list[InboundEvent]:
    """SES events delivered by SNS: the SNS document, whose `Message` is the SES record as a JSON
    string (SES Developer Guide, "Amazon SNS notification contents" for `notificationType`
    notifications and "Contents of event data that Amazon SES publishes to Amazon SNS" for
    `eventType` event publishing). Delivery, Bounce (`bounceType` "Permanent" is hard, "Transient"
    and "Undetermined" soft), Complaint, Open and Click are mapped; other types, and SNS
    subscription messages, give nothing.

    One notification may cover several recipients (the guide says so): there is an event per
    recipient, whose id is the SNS `MessageId`, followed by `:recipient` when there are several.
    Open and Click name no recipient: it is the mail's destination when there is one. The
    Message-ID is the `Message-ID` of `mail.headers`, else `mail.commonHeaders.messageId` when it is
    one (has an `@`: in the guide's examples it is SES's own message id, kept as
    `provider_message_id`, which is no Message-ID)."""
    document = _object(_json(payload), "an SNS message")
    if document.get("Type") != "Notification":
        return []
    sns_id = _required_str(document, "MessageId", "the SNS message")
    message = _required_str(document, "Message", "the SNS message")
    try:
        record = _object(msgspec.json.decode(message), "the SES record")
    except msgspec.DecodeError:
        raise PayloadError("the SNS Message is not JSON") from None
    kind = record.get("eventType") or record.get("notificationType")
    mail = _optional_object(record, "mail")
    destination = [d for d in mail.get("destination") or () if isinstance(d, str)]
    data: dict[str, Any] = {}
    event_type: EventType
    if kind == "Delivery":
        event_type, section = "email.delivered", _optional_object(record, "delivery")
        recipients = [r for r in section.get("recipients") or () if isinstance(r, str)] or destination
        per_recipient: dict[str, dict[str, Any]] = {r: {} for r in recipients}
    elif kind == "Bounce":
        event_type, section = "email.bounced", _optional_object(record, "bounce")
        bounce_kind = "hard" if section.get("bounceType") == "Permanent" else "soft"
        summary = "/".join(str(section[k]) for k in ("bounceType", "bounceSubType") if section.get(k)) or None
        per_recipient = {}
        for entry in section.get("bouncedRecipients") or ():
            recipient = _object(entry, "a bounced recipient")
            reason = _optional_str(recipient, "diagnosticCode") or summary
            per_recipient[_required_str(recipient, "emailAddress", "a bounced recipient")] = {"kind": bounce_kind, "reason": reason}
    elif kind == "Complaint":
        event_type, section = "email.complained", _optional_object(record, "complaint")
        per_recipient = {}
        for entry in section.get("complainedRecipients") or ():
            recipient = _object(entry, "a complained recipient")
            per_recipient[_required_str(recipient, "emailAddress", "a complained recipient")] = {}
        data = _with(data, feedback_type=_optional_str(section, "complaintFeedbackType"))
    elif kind in ("Open", "Click"):
        event_type = "email.opened" if kind == "Open" else "email.clicked"
        section = _optional_object(record, kind.lower())
        if kind == "Click":
            data = {"url": _required_str(section, "link", "an SES click")}
        # one event, to the one destination when there is one (SES does not say who opened)
        per_recipient = {destination[0] if len(destination) == 1 else "": {}}
    else:
        return []
    common = _optional_object(mail, "commonHeaders")
    common_id = common.get("messageId")  # SES's own id unless the sender set a Message-ID of its own
    message_id = _angle(_mail_header(mail, "message-id")) or (_angle(common_id) if "@" in str(common_id or "") else None)
    occurred_at = _from_iso(section.get("timestamp") or document.get("Timestamp"))
    several = len(per_recipient) > 1
    return [InboundEvent(
        type=event_type, provider_event_id=f"{sns_id}:{recipient}" if several else sns_id, message_id=message_id,
        recipient=recipient or None, data=_with({**data, **extra}, provider_message_id=_optional_str(mail, "messageId")),
        occurred_at=occurred_at,
    ) for recipient, extra in per_recipient.items()]  # fmt: skip


def _mail_header(mail: Mapping[str, Any], name: str) -> Any:
    for header in mail.get("headers") or ():
        if isinstance(header, dict) and str(header.get("name", "")).lower() == name:
            return header.get("value")
    return None


# --- Postmark -----------------------------------------------------------------------------------

# Postmark bounce `Type`s (its "Bounce types" reference): which are not bounces at all, and which
# mean the address will never take mail (every other type is a soft bounce)
_POSTMARK_NOT_BOUNCES = frozenset({"Subscribe", "AutoResponder", "AddressChange", "OpenRelayTest", "ChallengeVerification",
                                   "InboundError", "Unconfirmed"})  # fmt: skip
_POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})


def events_from_postmark(payload: object) -> list[InboundEvent]:
    """A Postmark webhook body: one record, by `RecordType` (Postmark docs, "Webhooks": Delivery,
    Bounce, SpamComplaint, Open, Click, SubscriptionChange). A bounce is hard for `Type`
    HardBounce, BadEmailAddress or ManuallyDeactivated, or when Postmark deactivated the address
    (`Inactive`); bounce types that are not failures (AutoResponder, Subscribe, ...) are skipped,
    an `Unsubscribe` is an unsubscribe and a `SpamComplaint` a complaint. A SubscriptionChange that
    suppresses sending is an unsubscribe; one that lifts it is skipped.

    Postmark's payloads carry no Message-ID header (its `MessageID` is its own id, kept as
    `provider_message_id`): the Message-ID is the `dee_message_id` of the record's `Metadata`, which
    Postmark echoes on every event of the email. Only bounces have an event id (`ID`): the other ids
    are the message id, the record type and the recipient or the time, which Postmark repeats on a
    retry."""
    record = _object(_json(payload), "a Postmark body")
    record_type = record.get("RecordType")
    message = _optional_str(record, "MessageID")
    data: dict[str, Any] = {}
    event_type: EventType
    if record_type in ("Bounce", "SpamComplaint"):
        bounce_type = record.get("Type")
        if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
            event_type = "email.complained"
        elif bounce_type == "Unsubscribe":
            event_type = "email.unsubscribed"
        elif bounce_type in _POSTMARK_NOT_BOUNCES:
            return []
        else:
            event_type = "email.bounced"
            hard = bounce_type in _POSTMARK_HARD or record.get("Inactive") is True
            data = {
                "kind": "hard" if hard else "soft",
                "reason": _optional_str(record, "Description") or _optional_str(record, "Details") or _optional_str(record, "Name"),
            }
        event_id = _required_str(record, "ID", f"a Postmark {record_type}")
        recipient = _required_str(record, "Email", f"a Postmark {record_type}")
        occurred = record.get("BouncedAt")
    elif record_type == "Delivery":
        event_type = "email.delivered"
        recipient = _required_str(record, "Recipient", "a Postmark Delivery")
        event_id = f"{_required_str(record, 'MessageID', 'a Postmark Delivery')}:Delivery:{recipient}"
        occurred = record.get("DeliveredAt")
    elif record_type in ("Open", "Click"):
        event_type = "email.opened" if record_type == "Open" else "email.clicked"
        recipient = _required_str(record, "Recipient", f"a Postmark {record_type}")
        occurred = _required_str(record, "ReceivedAt", f"a Postmark {record_type}")
        event_id = f"{_required_str(record, 'MessageID', f'a Postmark {record_type}')}:{record_type}:{recipient}:{occurred}"
        if record_type == "Click":
            data = {"url": _required_str(record, "OriginalLink", "a Postmark Click")}
        elif isinstance(record.get("FirstOpen"), bool):
            data = {"first_open": record["FirstOpen"]}
    elif record_type == "SubscriptionChange":
        if record.get("SuppressSending") is not True:
            return []
        event_type = "email.unsubscribed"
        recipient = _required_str(record, "Recipient", "a Postmark SubscriptionChange")
        occurred = _required_str(record, "ChangedAt", "a Postmark SubscriptionChange")
        event_id = f"{_required_str(record, 'MessageID', 'a Postmark SubscriptionChange')}:SubscriptionChange:{recipient}:{occurred}"
        data = _with(data, reason=_optional_str(record, "SuppressionReason"))
    else:
        return []
    tagged = _angle(_optional_object(record, "Metadata").get(MESSAGE_ID_TAG))
    return [InboundEvent(type=event_type, provider_event_id=event_id, message_id=tagged, recipient=recipient,
                         data=_with(data, provider_message_id=message), occurred_at=_from_iso(occurred))]  # fmt: skip


# --- Standard Webhooks --------------------------------------------------------------------------


def events_from_standard_webhooks(payload: object, webhook_id: str | None = None) -> list[InboundEvent]:
    """A sender that speaks DEE's own event types over Standard Webhooks: the spec's payload shape
    `{"type", "timestamp", "data"}` (standardwebhooks.com, "Payload structure") with `type` a DEE
    event type. `data.message_id` and `data.recipient` become the event's fields, the rest of
    `data` is its data, and `timestamp` (ISO 8601) its time. The id is the `webhook-id` header
    (`webhook_id`: the spec makes it the idempotency key, the same on every retry), else the body's
    `id`. As the sender claims DEE's vocabulary, an unknown type is refused (`PayloadError`), as is a
    bounce without `kind` "hard" or "soft" or a call outcome DEE does not know."""
    body = _object(_json(payload), "a Standard Webhooks body")
    event_type = body.get("type")
    if event_type not in EVENT_TYPES:
        raise PayloadError("not a DEE event type")
    data = dict(_optional_object(body, "data"))
    message_id, recipient = data.pop("message_id", None), data.pop("recipient", None)
    if not (message_id is None or isinstance(message_id, str)) or not (recipient is None or isinstance(recipient, str)):
        raise PayloadError("data.message_id and data.recipient are strings")
    if event_type == "email.bounced" and data.get("kind") not in ("hard", "soft"):
        raise PayloadError('a bounce needs data.kind "hard" or "soft"')
    if str(event_type).startswith("call.") and "outcome" in data and data["outcome"] not in CALL_OUTCOMES:
        raise PayloadError("unknown call outcome")
    event_id = webhook_id or _required_str(body, "id", "a Standard Webhooks body without webhook-id")
    return [InboundEvent(type=event_type, provider_event_id=event_id, message_id=_angle(message_id), recipient=recipient or None,
                         data=data, occurred_at=_from_iso(body.get("timestamp")))]  # fmt: skip


# --- Twilio -------------------------------------------------------------------------------------

# CallStatus -> (event type, outcome of a final status)
_TWILIO_STATUSES: dict[str, tuple[EventType, str | None]] = {
    "initiated": ("call.initiated", None), "ringing": ("call.ringing", None), "in-progress": ("call.answered", None),
    "completed": ("call.completed", "answered"), "busy": ("call.failed", "busy"), "no-answer": ("call.failed", "no_answer"),
    "failed": ("call.failed", "failed"), "canceled": ("call.failed", "declined"),
}  # fmt: skip


def events_from_twilio(payload: bytes | str | Mapping[str, str]) -> list[InboundEvent]:
    """A Twilio call status callback: the form fields (Twilio docs, "Call resource: StatusCallback
    parameters") `CallSid`, `CallStatus`, `To`, `Timestamp` (RFC 2822), `CallDuration` on the
    final status and `AnsweredBy` with answering machine detection.

    initiated, ringing and in-progress are `call.initiated`, `call.ringing`, `call.answered`;
    completed is `call.completed` (outcome "answered"), or `call.voicemail` (outcome "voicemail")
    when `AnsweredBy` is a machine_* value, or `call.failed` (outcome "failed") when a fax answered;
    busy, no-answer, failed and canceled are `call.failed` with outcome "busy", "no_answer",
    "failed" and "declined". `queued` and unknown statuses are skipped. The id is
    `{CallSid}:{CallStatus}`: Twilio sends each status of a call once (and again only on retry)."""
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("body is not UTF-8") from None
    if isinstance(payload, str):
        try:
            fields: Mapping[str, str] = dict(parse_qsl(payload, keep_blank_values=True, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("body is not form-encoded") from None
    elif isinstance(payload, Mapping):
        fields = payload
    else:
        raise PayloadError("a Twilio body is form-encoded")
    sid = _required_str(fields, "CallSid", "a Twilio callback")
    status = _required_str(fields, "CallStatus", "a Twilio callback")
    mapped = _TWILIO_STATUSES.get(status)
    if mapped is None:
        return []
    event_type, outcome = mapped
    answered_by = _optional_str(fields, "AnsweredBy")
    if status == "completed" and answered_by is not None:
        if answered_by.startswith("machine"):
            event_type, outcome = "call.voicemail", "voicemail"
        elif answered_by == "fax":
            event_type, outcome = "call.failed", "failed"
    duration: int | None = None
    if _optional_str(fields, "CallDuration") is not None:
        try:
            duration = int(fields["CallDuration"])
        except ValueError:
            raise PayloadError("CallDuration is not a number of seconds") from None
    occurred_at = None
    if (stamp := _optional_str(fields, "Timestamp")) is not None:
        try:
            moment = parsedate_to_datetime(stamp)
        except (TypeError, ValueError):
            raise PayloadError("Timestamp is not an RFC 2822 date") from None
        occurred_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    data = _with({"callSid": sid}, outcome=outcome, duration=duration, answeredBy=answered_by)
    return [InboundEvent(type=event_type, provider_event_id=f"{sid}:{status}", recipient=_optional_str(fields, "To"), data=data,
                         occurred_at=occurred_at)]  # fmt: skip
