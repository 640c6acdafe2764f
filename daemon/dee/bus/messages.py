"""The wire protocol (SPEC section 9): msgspec Structs, camelCase JSON, one per stream entry.

Publishers in any language XADD `{"m": <json>}` to `dee:{p}:in`, where `p` is given by
`dee.routing.partition_for`. Every message has a `commandId`: a message whose commandId was
already accepted is not applied again (for `event` messages the commandId is the event id).
With `replyTo` set, the daemon XADDs a `Reply` to that stream once the message is committed.
The JSON Schema of these messages is `config/schema/wire.schema.json` (`dee schema wire`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal

import msgspec

from dee.kernel.contact import Contact


class Message(msgspec.Struct, frozen=True, tag_field="type", rename="camel", forbid_unknown_fields=True, kw_only=True):
    command_id: str
    reply_to: str | None = None


RunId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")]  # it goes into Message-IDs


class Execute(Message, tag="execute", frozen=True):
    """Enrol a contact in a registered plan version; `run_id` is chosen by the publisher (letters,
    digits, `_`, `-` and `.`, at most 64: it is part of the run's Message-IDs and links)."""

    run_id: RunId
    plan_id: str
    plan_version: int
    contact: Contact
    variables: dict[str, Any] = {}
    start_at: int | None = None
    idempotency_key: str | None = None


class BatchItem(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    run_id: RunId
    contact: Contact


class ExecuteBatch(Message, tag="executeBatch", kw_only=True, frozen=True):
    """Enrol many contacts of one partition at once (what `bulk_execute` sends): one message,
    one transaction, batched reads and a COPY of the new runs."""

    plan_id: str
    plan_version: int
    variables: dict[str, Any] = {}
    items: list[BatchItem]


class Pause(Message, tag="pause", frozen=True):
    run_id: str


class Resume(Message, tag="resume", frozen=True):
    run_id: str


class Cancel(Message, tag="cancel", frozen=True):
    run_id: str
    reason: str = ""


class Retry(Message, tag="retry", frozen=True):
    run_id: str


class Event(Message, tag="event", frozen=True):
    """An external event; without `runId` it goes to every non-terminal run of the contact."""

    event_type: str
    contact_id: str
    data: dict[str, Any] = {}
    occurred_at: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    message_id: str | None = None


class Suppress(Message, tag="suppress", frozen=True):
    contact_id: str
    level: Literal["global", "channel", "plan", "regulatory"]
    reason: str
    source: str
    channel: str | None = None
    plan_id: str | None = None


class Consent(Message, tag="consent", frozen=True):
    contact_id: str
    channel: str
    status: Literal["granted", "revoked", "expired"]
    source: str
    expires_tick: int | None = None
    evidence: dict[str, Any] = {}


class EraseContact(Message, tag="eraseContact", frozen=True):
    """Erase a contact's personal data (`dee.privacy`): applied by the partition that owns the
    contact, in its tick transaction, like every other write to the contact's runs."""

    contact_id: str
    reason: str


class Result(Message, tag="result", frozen=True):
    """A channel adapter's answer, sent by the dispatcher (internal, but on the same wire)."""

    run_id: str
    idempotency_key: str
    attempt: int
    status: Literal["delivered", "failed"]
    error_kind: Literal["transient", "permanent", "rate_limited", "soft_bounce", "hard_bounce", "budget_exhausted"] | None = None
    error: str | None = None
    outcome: str | None = None
    data: dict[str, Any] = {}  # a rate limit's wait, when it names one, is `retryAfterMs`
    signature: str = ""  # HMAC-SHA256 of the result without it, with the deployment's result key


class ReplayVerdict(Message, tag="replayVerdict", frozen=True):
    """Journal a replay's verdict in the run's chain (`replay(run_id, dry_run=False)`)."""

    run_id: str
    identical: bool
    fields: list[str] = []
    reissued: int = 0


class Wake(Message, tag="wake", frozen=True):
    """Nudges a partition to look at the clock now (sent by `advance_clock`); changes nothing."""


Inbound = (
    Execute | ExecuteBatch | Pause | Resume | Cancel | Retry | Event | Suppress | Consent | EraseContact | Result | ReplayVerdict
    | Wake
)


class Reply(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The acknowledgement XADDed to `replyTo` after commit."""

    command_id: str
    ok: bool
    error_type: str | None = None
    error: str | None = None
    run_id: str | None = None
    runs: list[str] = []
    skipped: list[str] = []
    restricted: list[str] = []  # a suppression naming its channel: the runs going on without that channel
    details: dict[str, Any] = {}


_decoder = msgspec.json.Decoder(Inbound)
_encoder = msgspec.json.Encoder()


def decode(raw: bytes) -> Inbound:
    """Strict decoding: unknown fields, wrong types or an unknown `type` raise ValidationError."""
    return _decoder.decode(raw)


def encode(message: Inbound | Reply) -> bytes:
    return _encoder.encode(message)


def digest(message: Inbound) -> bytes:
    """A message's content fingerprint (what a reused commandId is compared by)."""
    return hashlib.sha256(_encoder.encode(message)).digest()


def sign_result(result: Result, key: bytes) -> Result:
    """The result signed with the deployment's key: only a dispatcher of the deployment (which
    holds the key) can make a channel result a partition accepts."""
    unsigned = msgspec.structs.replace(result, signature="")
    return msgspec.structs.replace(unsigned, signature=hmac.new(key, _encoder.encode(unsigned), hashlib.sha256).hexdigest())


def result_signed(result: Result, key: bytes) -> bool:
    expected = sign_result(result, key).signature
    return bool(result.signature) and hmac.compare_digest(result.signature, expected)


def encode_json(value: Any) -> str:
    return _encoder.encode(value).decode()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the public messages (what other languages publish)."""
    return msgspec.json.schema(Execute | ExecuteBatch | Pause | Resume | Cancel | Retry | Event | Suppress | Consent)
