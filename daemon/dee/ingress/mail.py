"""Inbound mail, classified: a reply, a bounce or an automatic answer to one of DEE's emails.

DEE gives every email it sends a Message-ID of the form `<{32 hex}@{domain}>` (RFC 5322 section 3.6.4,
`dee.kernel.idempotency.message_id`; `<{32 hex}.{run id}@{domain}>` is recognised too). Whatever
comes back to `POST /inbound/email` either refers to one of those ids or is nothing to DEE. This
module is the pure half of that ingress: bytes (or a provider's inbound-parse payload) in, at most
one `InboundMail` out. It does no I/O and keeps no state, so the same input always gives the same
answer, which is what lets the ingress derive a deterministic event id from `received_message_id`.

Inbound mail is hostile input. Everything is bounded before or while it is parsed (size, MIME
parts, nesting, header fields), every string handed back is a single line of bounded length, and
malformed input is either read as far as it makes sense or refused with `MailError`; no other
exception escapes. The work is bounded too, not only the size (`read_mime`): anyone can mail the
reply address, and a message that takes minutes to parse would stall the ingress.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy, compat32
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import msgspec

__all__ = ["DEFAULT_LIMITS", "BounceKind", "InboundMail", "Kind", "MailError", "MailLimits", "parse_inbound", "parse_inbound_json",
           "read_mime"]  # fmt: skip

Kind = Literal["reply", "bounce", "auto_reply"]
BounceKind = Literal["hard", "soft"]


class MailError(ValueError):
    """An inbound message DEE refuses to read: too big, too deep, or not a message at all."""


class MailLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on the work one inbound message may cost.

    `max_bytes` is checked before anything is parsed; `max_parts` also bounds the MIME containers a
    message may declare, which is what bounds the standard library parser's recursion. `max_lines`
    too is checked first: the parser's time goes by lines (10 MB of empty lines take 4 s), and a
    10 MB message of base64 attachments has 135 000 of them."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 16
    max_parts: int = 200
    max_headers: int = 1000
    max_lines: int = 250_000


DEFAULT_LIMITS: Final = MailLimits()


class InboundMail(msgspec.Struct, frozen=True, kw_only=True):
    """What an inbound message is to DEE.

    `message_id` is the engine Message-ID it refers to, in the engine's own form; for a bounce it
    is the Message-ID of the email that bounced. `received_message_id` is the inbound message's own
    Message-ID, or `sha256:{hex}` of the raw bytes when it has none. `occurred_at` is its `Date`
    (ISO 8601, UTC). The bounce fields are set for bounces only; `recipient` is the address that
    failed when the DSN names it."""

    kind: Kind
    message_id: str
    received_message_id: str
    sender: str | None = None
    subject: str | None = None
    occurred_at: str | None = None
    bounce_kind: BounceKind | None = None
    status: str | None = None
    diagnostic: str | None = None
    recipient: str | None = None


# -- limits on what is handed back or looked at ----------------------------------------------------

_MAX_SUBJECT: Final = 512
_MAX_DIAGNOSTIC: Final = 1000
_MAX_ADDRESS: Final = 320  # RFC 5321 section 4.5.3.1: 64 for the local part, 255 for the domain
_MAX_MESSAGE_ID: Final = 995  # a msg-id on one 998-character line
_MAX_STRUCTURED: Final = 8192  # longer header values are not given to the structured header parsers
_MAX_FROM: Final = 2048  # the address parser takes seconds over quoted strings of 8 KB (its time is quadratic)
_MAX_COMMENTS: Final = 32  # "(" in one structured field: the structured parsers recurse once per nested comment
# the email package's parameter parser takes time quadratic in a field's length (21 ms for 8 KB of
# ";"): the squares of the lengths of a message's Content-Type and Content-Disposition fields add up
# to at most this (about 0.1 s of it), which a few thousand ordinary fields do not come near
_MIME_FIELD_WORK: Final = 2**28
_MAX_FIELD: Final = 4096  # characters of one DSN field kept (RFC 3464 fields are a line or two)
_MAX_TEXT: Final = 1024 * 1024  # bytes of one text part scanned for a plain-text bounce

_DOMAIN: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_HEADER_NAME: Final = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 section 3.6.8: printable ASCII except the colon
_MIME_FIELD: Final = re.compile(
    rb"(?:\A|(?<=[\r\n]))content-(type|disposition)[ \t]*:[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*", re.I
)
_CONTAINER: Final = re.compile(rb"multipart|message", re.I)
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SPACES: Final = re.compile(r"\s+")
_NEWLINES: Final = re.compile(r"[\r\n]+")
_TOKEN: Final = re.compile(r"[!-;=?-~]{1,990}")
_OWN_ID: Final = re.compile(r"<\s*([!-;=?-~]{1,990})\s*>")
_BARE_ID: Final = re.compile(r"[!-;=?-~]{1,990}@[!-;=?-~]{1,990}")
_ADDR: Final = r"[^\s\x00-\x1f\x7f<>()\[\],;:\"@]{1,64}@[^\W_](?:[\w.-]{0,253}[^\W_])?"  # a local part, then a host name
_ADDRESS: Final = re.compile(_ADDR)
_BRACKETED_ADDRESS: Final = re.compile(rf"<\s*({_ADDR})\s*>")
_COMMENT: Final = re.compile(r"\([^()]*\)")
_XTEXT: Final = re.compile(r"\+([0-9A-Fa-f]{2})")
_COLON_OFFSET: Final = re.compile(r"([+-]\d\d):(\d\d)\s*$")

# RFC 3463 enhanced status codes: class.subject.detail
_STATUS: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# in a plain-text bounce: "550 5.1.1", "550-5.1.1", then qmail's "(#5.1.1)" or "Status: 5.1.1", then a bare "550 ..."
_TEXT_STATUS: Final = (
    re.compile(r"(?<![\w.])[245]\d\d[ -]+([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)"),
    re.compile(r"(?:#|\bstatus:?[ \t]*)([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)", re.I),
)
_TEXT_REPLY_CODE: Final = re.compile(r"(?:^|[:;][ \t]*|said:[ \t]*)([45][0-5]\d)[ -](?=\S)", re.I | re.M)

_DAEMONS: Final = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster"})
_SUCCESS_ACTIONS: Final = frozenset({"delivered", "relayed", "expanded"})
_DSN_TYPES: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RETURNED_MESSAGES: Final = frozenset({"message/rfc822", "message/global"})
_RETURNED_HEADERS: Final = frozenset({"text/rfc822-headers", "message/global-headers"})
_MDN_TYPES: Final = frozenset({"message/disposition-notification", "message/global-disposition-notification"})
_AUTO_PRECEDENCE: Final = frozenset({"bulk", "junk", "auto_reply", "auto-reply"})
_AUTO_HEADERS: Final = ("x-autoreply", "x-autorespond", "x-auto-reply", "x-autoresponder")
_FALSE: Final = frozenset({"", "no", "false", "0", "off"})
_AUTO_SUBJECT: Final = re.compile(
    r"^\s*(?:(?:automatic|auto)[\s_-]*(?:reply|response|answer)|autoreply|autoresponse|auto\s*:"
    r"|out[\s-]+of[\s-]+(?:the[\s-]+)?office|ooo\s*[:\-]|abwesenheit|automatische\s+antwort|automatisch\s+antwoord"
    r"|r[ée]ponse\s+automatique|respuesta\s+autom[áa]tica|resposta\s+autom[áa]tica|risposta\s+automatica"
    r"|fuera\s+de\s+la\s+oficina|autosvar)"
    r"|\bis\s+out\s+of\s+(?:the\s+)?office\b",
    re.I,
)
# headers that make no sense on the single text part a provider payload is rebuilt into
_MIME_HEADERS: Final = frozenset({"content-type", "content-transfer-encoding", "mime-version", "content-disposition"})


# -- public functions ------------------------------------------------------------------------------


def parse_inbound(raw: bytes, domain: str, *, limits: MailLimits = DEFAULT_LIMITS) -> InboundMail | None:
    """Read one raw RFC 5322 message and say what it is to DEE, or None when it is nothing to DEE.

    None means the message refers to none of the engine's Message-IDs for `domain` (or is a DSN
    that reports successful delivery only). A bounce is recognised before an automatic answer
    (DSNs are themselves automatic, RFC 3464 section 2 and RFC 3834 section 2), and an automatic
    answer before a reply, so an out-of-office never counts as a person answering.

    Raises `MailError` for a message over `limits` or one that cannot be read as a message at all,
    and `ValueError` for a `domain` that is not a host name (a configuration error, not bad mail).
    """
    ids = _EngineIds(domain)
    data = bytes(raw)
    message = read_mime(data, limits)
    try:
        return _classify(message, data, ids, limits)
    except MailError:
        raise
    except RecursionError as exc:  # e.g. thousands of nested comments in a structured header
        raise MailError("message is nested too deeply to parse") from exc
    except Exception as exc:
        # the email package's header parsers have raised IndexError, HeaderParseError and the like on
        # hostile input; whatever the cause, the contract is that bad mail gives MailError only
        raise MailError(f"message could not be parsed ({type(exc).__name__})") from exc


def read_mime(raw: bytes, limits: MailLimits = DEFAULT_LIMITS) -> Message:
    """Parse MIME bytes (a message, or a multipart form behind its Content-Type) with the work
    bounded, not only the size; `MailError` for anything over `limits` or unparseable.

    The standard library parser recurses once per nested multipart or message/*: counting what the
    bytes declare before parsing bounds that recursion (`max_parts` containers at most). Its
    structured header parsers (`policy.default`) take time quadratic in a header's length, and the
    parser calls them several times per part (8 KB of quotes in a Content-Type: 2 s; 1 MB: hours), so
    the parse uses `compat32`, whose MIME reading is the plain splitting of parameters, on
    Content-Type and Content-Disposition fields of bounded length. And it makes at most
    2 x `max_parts` + 2 messages (parts, and the field blocks of delivery reports): a body of a
    hundred thousand tiny parts is refused after the first few hundred, not parsed for half a minute.
    """
    data = bytes(raw)
    if len(data) > limits.max_bytes:
        raise MailError(f"message is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
    if not data.strip():
        raise MailError("empty message")
    lines = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    if lines > limits.max_lines:
        raise MailError(f"message has {lines} lines, over the limit of {limits.max_lines}")
    containers = work = 0
    for found in _MIME_FIELD.finditer(data):
        field = found.group()
        if len(field) > _MAX_STRUCTURED:
            raise MailError(f"a Content-{found.group(1).decode().title()} field of {len(field)} bytes, over {_MAX_STRUCTURED}")
        if field.count(b"(") > _MAX_COMMENTS:  # no mail needs it, and whoever reads the field structured would recurse
            raise MailError(f"a Content-{found.group(1).decode().title()} field nested in comments too deeply")
        work += len(field) ** 2
        containers += found.group(1).lower() == b"type" and _CONTAINER.search(field) is not None
    if containers > limits.max_parts:
        raise MailError(f"message declares {containers} MIME containers, over the limit of {limits.max_parts}")
    if work > _MIME_FIELD_WORK:
        raise MailError("the message's Content-Type and Content-Disposition fields are too long to read")
    try:
        return BytesParser(_PartBudget(2 * limits.max_parts + 2), policy=compat32).parsebytes(data)
    except MailError:
        raise
    except RecursionError as exc:
        raise MailError("message is nested too deeply to parse") from exc
    except Exception as exc:  # the contract: bad mail gives MailError only
        raise MailError(f"message could not be parsed ({type(exc).__name__})") from exc


class _PartBudget:
    """The message factory of one parse: past `limit` messages made, the parse stops. The parser's
    work per part is its headers' work, and how many parts there are is known only at the end."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def __call__(self, policy: Policy = compat32) -> Message:
        self.left -= 1
        if self.left < 0:
            raise MailError("message has too many MIME parts to parse")
        return Message(policy)


def parse_inbound_json(payload: Mapping[str, Any], domain: str, *, limits: MailLimits = DEFAULT_LIMITS) -> InboundMail | None:
    """Read a provider's inbound-parse payload (SendGrid Inbound Parse, Mailgun routes, Postmark
    inbound) and classify it as `parse_inbound` does.

    A full raw message in the payload (SendGrid's `email` with "send raw", Mailgun's `body-mime`,
    Postmark's `RawEmail`) is preferred: only it carries a DSN's machine-readable parts. Otherwise
    the provider's header list and plain-text body are rebuilt into a single-part message, one line
    per header field (CR and LF inside a value become spaces, so a value cannot inject a field), and
    that message is classified; `received_message_id` then falls back to a sha256 of the rebuilt
    bytes, which is as deterministic as the payload."""
    fields = _mapping(payload)
    ids = _EngineIds(domain)
    for key in ("email", "body-mime", "RawEmail"):
        raw = _raw_field(fields.get(key), limits)
        if raw:
            return parse_inbound(raw, ids.domain, limits=limits)
    if any(key in fields for key in ("Headers", "MessageID", "FromFull", "TextBody")):
        headers, text = _postmark(fields)
    elif any(key in fields for key in ("message-headers", "body-plain", "stripped-text")):
        headers, text = _mailgun(fields)
    elif "headers" in fields or ("text" in fields and "from" in fields):
        headers, text = _sendgrid(fields)
    else:
        raise MailError("not a recognised inbound-parse payload (SendGrid, Mailgun or Postmark)")
    size = len(text) + sum(len(name) + len(value) + 4 for name, value in headers)
    if size > limits.max_bytes:
        raise MailError(f"payload is about {size} bytes, over the {limits.max_bytes}-byte limit")
    if len(headers) > limits.max_headers:
        raise MailError(f"payload has {len(headers)} header fields, over the limit of {limits.max_headers}")
    return parse_inbound(_rebuild(headers, text), ids.domain, limits=limits)


# -- the engine's Message-IDs ----------------------------------------------------------------------


class _EngineIds:
    """Finds the engine's Message-IDs for one domain: strictly (a bracketed msg-id, as in header
    fields) or loosely (an id in running text or an xtext envelope id, brackets optional).

    The local part is the 32 hex characters of the send's key, optionally followed by `.{run id}`
    (the form that names the run, `dee.kernel.idempotency.message_id` with a run id); both match, and
    the id comes back with its hex in lower case, its run id as written and the configured domain."""

    def __init__(self, domain: str) -> None:
        if not _DOMAIN.fullmatch(domain) or len(domain) > 253:
            raise ValueError(f"not a mail domain: {domain!r}")
        self.domain = domain
        local = r"([0-9A-Fa-f]{32})(\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63})?"
        host = re.escape(domain)
        self._strict = re.compile(rf"<\s*{local}@{host}\s*>", re.I)
        self._loose = re.compile(rf"(?<![A-Za-z0-9._%+\-]){local}@{host}(?![A-Za-z0-9\-]|\.[A-Za-z0-9])", re.I)
        self._quoted = re.compile(
            rf"^[ \t>]*(?:X-Original-Message-ID|Original-Message-ID|Message-ID)[ \t]*:[ \t]*(?:(?:\r\n|\r|\n)[ \t>]*)?"
            rf"<\s*{local}@{host}\s*>",
            re.I | re.M,
        )

    def canonical(self, found: re.Match[str]) -> str:
        return f"<{found.group(1).lower()}{found.group(2) or ''}@{self.domain}>"

    def first(self, text: str, *, loose: bool = False) -> str | None:
        found = (self._loose if loose else self._strict).search(text)
        return self.canonical(found) if found else None

    def last(self, text: str) -> str | None:
        found = None
        for match in self._strict.finditer(text):
            found = match
        return self.canonical(found) if found else None

    def quoted(self, text: str) -> str | None:
        found = self._quoted.search(text)
        return self.canonical(found) if found else None


# -- classification --------------------------------------------------------------------------------


class _Fields:
    """One part's header fields by lower-case name, unfolded (RFC 5322 section 2.2.3) and with
    8-bit bytes read as UTF-8 (RFC 6532); values are raw, before any RFC 2047 decoding."""

    def __init__(self, part: Message, limits: MailLimits) -> None:
        self.values: dict[str, list[str]] = {}
        for count, (name, value) in enumerate(part.raw_items(), 1):
            if count > limits.max_headers:
                raise MailError(f"more than {limits.max_headers} header fields")
            self.values.setdefault(str(name).strip().lower(), []).append(_unfold(str(value)))

    def __bool__(self) -> bool:
        return bool(self.values)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> str | None:
        values = self.values.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])


class _Bounce(msgspec.Struct, frozen=True):
    kind: BounceKind
    status: str | None
    diagnostic: str | None
    recipient: str | None


def _classify(message: Message, raw: bytes, ids: _EngineIds, limits: MailLimits) -> InboundMail | None:
    top = _Fields(message, limits)
    if not top:
        raise MailError("no header fields: not an RFC 5322 message")
    parts = _parts(message, limits)
    sender = _sender(top.get("from"))
    common: dict[str, Any] = {
        "received_message_id": _own_id(top.get("message-id"), raw),
        "sender": sender,
        "subject": _subject(top.get("subject")),
        "occurred_at": _date(top.get("date")),
    }
    types = {kind for kind, _ in parts}
    report_type = (_param(message, "report-type") or "").lower() if parts[0][0] == "multipart/report" else ""
    daemon = sender is not None and sender.rpartition("@")[0].lower() in _DAEMONS
    if types & _DSN_TYPES or report_type == "delivery-status" or daemon:
        return _bounce(top, parts, ids, common, limits)
    if _automatic(top, common["subject"], types, report_type):
        answered = _answered(top, ids) or _mdn_original(parts, ids, limits)
        return InboundMail(kind="auto_reply", message_id=answered, **common) if answered else None
    answered = _answered(top, ids)
    return InboundMail(kind="reply", message_id=answered, **common) if answered else None


def _parts(message: Message, limits: MailLimits) -> list[tuple[str, Message]]:
    """Every MIME part with its content type, in document order, walked without recursion.

    message/* parts are leaves: a returned or forwarded message is evidence, not more of this one."""
    found: list[tuple[str, Message]] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > limits.max_depth:
            raise MailError(f"MIME parts nested deeper than {limits.max_depth}")
        if len(found) >= limits.max_parts:
            raise MailError(f"more than {limits.max_parts} MIME parts")
        if len(part) > limits.max_headers:
            raise MailError(f"a MIME part has more than {limits.max_headers} header fields")
        kind = _content_type(part)
        found.append((kind, part))
        if kind.startswith("multipart/") and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    return found


def _answered(top: _Fields, ids: _EngineIds) -> str | None:
    """The engine Message-ID a reply answers (RFC 5322 section 3.6.4): the first one in
    In-Reply-To, else the newest (last) one in References."""
    for value in top.all("in-reply-to"):
        found = ids.first(value)
        if found:
            return found
    return ids.last(" ".join(top.all("references")))


def _automatic(top: _Fields, subject: str | None, types: set[str], report_type: str) -> bool:
    """An automatic answer, not a person's: RFC 3834 `Auto-Submitted` other than `no`, the
    de-facto `X-Autoreply`/`X-Autorespond` and `Precedence: bulk/junk/auto_reply`, the subjects
    vacation responders use, and read receipts (RFC 8098 MDNs)."""
    auto = _token(top.get("auto-submitted"))
    if auto and auto != "no":
        return True
    if any(name in top and _token(top.get(name)) not in _FALSE for name in _AUTO_HEADERS):
        return True
    if _token(top.get("x-autogenerated")) == "reply" or _token(top.get("precedence")) in _AUTO_PRECEDENCE:
        return True
    if report_type == "disposition-notification" or types & _MDN_TYPES:
        return True
    return bool(subject and _AUTO_SUBJECT.search(subject))


def _mdn_original(parts: list[tuple[str, Message]], ids: _EngineIds, limits: MailLimits) -> str | None:
    """The Original-Message-ID of a read receipt (RFC 8098 section 3.2.5)."""
    for kind, part in parts:
        if kind in _MDN_TYPES:
            for block in _blocks(part, limits):
                found = ids.first(block.get("original-message-id", ""))
                if found:
                    return found
    return None


def _bounce(top: _Fields, parts: list[tuple[str, Message]], ids: _EngineIds, common: dict[str, Any],
            limits: MailLimits) -> InboundMail | None:
    """A delivery status notification: RFC 3464 when it has a message/delivery-status part, else a
    plain-text one from MAILER-DAEMON or postmaster, classified by the status it quotes."""
    per_message: list[dict[str, str]] = []
    per_recipient: list[dict[str, str]] = []
    for kind, part in parts:
        if kind in _DSN_TYPES:
            for block in _blocks(part, limits):
                if "action" in block or "final-recipient" in block or "status" in block:
                    per_recipient.append(block)
                if "reporting-mta" in block or "original-envelope-id" in block:
                    per_message.append(block)
    texts = [_text(part) for kind, part in parts if kind == "text/plain"]
    found = _recipients(per_recipient)
    if found is None:
        if per_recipient:  # a DSN that reports delivery, relaying or expansion only: nothing failed
            return None
        found = _text_bounce(texts)
    original = _original(top, parts, per_message, texts, ids)
    if original is None:
        return None
    return InboundMail(kind="bounce", message_id=original, bounce_kind=found.kind, status=found.status,
                       diagnostic=found.diagnostic, recipient=found.recipient, **common)


def _recipients(blocks: list[dict[str, str]]) -> _Bounce | None:
    """The outcome over a DSN's per-recipient fields (RFC 3464 section 2.3): hard if any recipient
    failed permanently, else soft if any failed temporarily or is delayed, else None."""
    hard: _Bounce | None = None
    soft: _Bounce | None = None
    for block in blocks:
        action = _token(block.get("action"))
        diagnostic = _clean(block.get("diagnostic-code"), _MAX_DIAGNOSTIC)
        status = _status(block.get("status")) or _text_status(diagnostic or "")[0]
        if action in _SUCCESS_ACTIONS:
            continue
        if action == "delayed" or (status is not None and status[0] == "4"):
            kind: BounceKind = "soft"
        elif (status is not None and status[0] == "5") or action == "failed":
            kind = "hard"  # RFC 3464 section 2.3.3: "failed" means it will not be delivered
        else:
            continue
        outcome = _Bounce(kind, status, diagnostic, _recipient(block))
        if kind == "hard" and hard is None:
            hard = outcome
        elif kind == "soft" and soft is None:
            soft = outcome
    return hard or soft


def _text_bounce(texts: list[str]) -> _Bounce:
    """A bounce without RFC 3464 fields, classified by the first status its text quotes; with none
    it is soft, since a hard bounce stops all mail to the address and needs evidence."""
    for text in texts:
        status, line = _text_status(text)
        if status:
            named = _BRACKETED_ADDRESS.search(line or "")  # "550 5.1.1 <a@b>: ..." names the recipient
            return _Bounce("hard" if status[0] == "5" else "soft", status, _clean(line, _MAX_DIAGNOSTIC),
                           named.group(1) if named else None)
    return _Bounce("soft", None, None, None)


def _original(top: _Fields, parts: list[tuple[str, Message]], per_message: list[dict[str, str]], texts: list[str],
              ids: _EngineIds) -> str | None:
    """The Message-ID of the email that bounced, from the best evidence first: the returned message
    or its headers (RFC 3464 section 2, RFC 6522), the Original-Envelope-Id (RFC 3461 section 4.4,
    xtext), the bounce's own X-Original-Message-ID, In-Reply-To and References, and last a quoted
    Message-ID line in the text."""
    for kind, part in parts:
        if kind in _RETURNED_MESSAGES:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                for name, value in inner[0].raw_items():
                    found = ids.first(_unfold(str(value))) if str(name).strip().lower() == "message-id" else None
                    if found:
                        return found
        elif kind in _RETURNED_HEADERS:
            found = ids.quoted(_text(part))
            if found:
                return found
    for block in per_message:
        found = ids.first(_XTEXT.sub(lambda m: chr(int(m.group(1), 16)), block.get("original-envelope-id", "")), loose=True)
        if found:
            return found
    for value in top.all("x-original-message-id"):
        found = ids.first(value, loose=True)
        if found:
            return found
    found = _answered(top, ids)
    if found:
        return found
    for text in texts:
        found = ids.quoted(text)
        if found:
            return found
    return None


# -- DSN fields ------------------------------------------------------------------------------------


def _blocks(part: Message, limits: MailLimits) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status (or disposition-notification) part, each a
    dict of lower-case names to unfolded first values (RFC 3464 section 2.1).

    The email package parses message/delivery-status into one header-only message per block; the
    other types arrive as one message whose body holds the blocks after the first."""
    blocks: list[dict[str, str]] = []
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _text_blocks(payload if isinstance(payload, str) else "")
    for block in payload[: limits.max_parts]:
        if not isinstance(block, Message):
            continue
        fields = _Fields(block, limits)
        blocks.append({name: values[0][:_MAX_FIELD] for name, values in fields.values.items()})
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            blocks.extend(_text_blocks(body))
    return blocks[: limits.max_parts]


def _text_blocks(text: str) -> list[dict[str, str]]:
    """Field blocks read from text: blank lines separate blocks, indented lines continue a field."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name = ""
    for line in _desurrogate(text).splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, name = {}, ""
        elif line[:1] in " \t" and name:
            current[name] = (current[name] + " " + line.strip())[:_MAX_FIELD]
        elif ":" in line:
            key, _, value = line.partition(":")
            name = key.strip().lower()
            if _HEADER_NAME.fullmatch(name) and name not in current:
                current[name] = value.strip()[:_MAX_FIELD]
            else:
                name = ""
    if current:
        blocks.append(current)
    return blocks


def _status(value: str | None) -> str | None:
    found = _STATUS.search(value or "")
    return ".".join(found.groups()) if found else None


def _text_status(text: str) -> tuple[str | None, str | None]:
    """The first RFC 3463 status a bounce's text quotes, with the line it is on; an SMTP reply
    code alone (RFC 5321 section 4.2) stands for its class's generic status, `5.0.0` or `4.0.0`."""
    for pattern in _TEXT_STATUS:
        found = pattern.search(text)
        if found:
            return found.group(1), _line_at(text, found.start(1))
    code = _TEXT_REPLY_CODE.search(text)
    if code:
        return f"{code.group(1)[0]}.0.0", _line_at(text, code.start(1))
    return None, None


def _line_at(text: str, index: int) -> str:
    start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    ends = [end for end in (text.find("\n", index), text.find("\r", index)) if end >= 0]
    return text[start : min(ends) if ends else len(text)]


def _recipient(block: dict[str, str]) -> str | None:
    """Final-Recipient (else Original-Recipient) without its address type: `rfc822; a@b` is `a@b`."""
    for name in ("final-recipient", "original-recipient"):
        value = block.get(name)
        if value:
            address = value.partition(";")[2] if ";" in value else value
            found = _ADDRESS.search(address)
            if found:
                return found.group()
    return None


# -- header values ---------------------------------------------------------------------------------


def _unfold(value: str) -> str:
    """RFC 5322 section 2.2.3 unfolding (drop the CRLF before folding white space), with 8-bit
    bytes the parser kept as surrogates read as UTF-8."""
    return _desurrogate(value.replace("\r", "").replace("\n", ""))


def _desurrogate(text: str) -> str:
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def _clean(text: str | None, limit: int) -> str | None:
    """One line for an event: no control characters (no CR or LF to inject with), no bidi
    overrides, runs of white space collapsed, at most `limit` characters; None when empty."""
    if text is None:
        return None
    line = _SPACES.sub(" ", _UNSAFE.sub(" ", _desurrogate(text[: limit * 4]))).strip()[:limit].strip()
    return line or None


def _token(value: str | None) -> str:
    """The leading token of a field such as Auto-Submitted or Action, lower case, without
    comments or parameters."""
    return _COMMENT.sub(" ", value or "").partition(";")[0].strip().lower()


def _subject(value: str | None) -> str | None:
    """The Subject with RFC 2047 encoded words decoded (charsets Python does not know are read as
    ASCII with replacement, by the email package); a single bounded line."""
    if value is None:
        return None
    decoded = value
    if len(value) <= _MAX_STRUCTURED:
        try:
            decoded = str(policy.default.header_factory("subject", value))
        except Exception:  # a header parser bug on hostile input: keep the raw value
            decoded = value
    return _clean(decoded, _MAX_SUBJECT)


def _sender(value: str | None) -> str | None:
    """The first From address's addr-spec (RFC 5322 section 3.4.1), or None when there is none."""
    if not value:
        return None
    address = None
    if len(value) <= _MAX_FROM and value.count("(") <= _MAX_COMMENTS:
        try:
            addresses = policy.default.header_factory("from", value).addresses
            address = str(addresses[0].addr_spec) if addresses else None
        except Exception:  # a header parser bug on hostile input: fall back to a plain search
            address = None
    if not address or not _ADDRESS.fullmatch(address):
        # an angle-addr is the mailbox itself (RFC 5322 section 3.4); a bare address is second best
        plain = _COMMENT.sub(" ", value)
        bracketed = _BRACKETED_ADDRESS.search(plain)
        found = bracketed.group(1) if bracketed else None
        if found is None:
            bare = re.search(rf"(?<![^\s,;:<>()\"]){_ADDR}(?![^\s,;<>()\"])", plain)
            found = bare.group() if bare else None
        address = found
    return address if address and len(address) <= _MAX_ADDRESS else None


def _own_id(value: str | None, raw: bytes) -> str:
    """The inbound message's own Message-ID, for a deterministic event id; when it has none (or
    only something unusable), a sha256 of the raw bytes, which is just as deterministic."""
    if value:
        found = _OWN_ID.search(value)
        if found and len(found.group(1)) <= _MAX_MESSAGE_ID:
            return f"<{found.group(1)}>"
        bare = _BARE_ID.fullmatch(value.strip())
        if bare and len(bare.group()) <= _MAX_MESSAGE_ID:
            return f"<{bare.group()}>"
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _date(value: str | None) -> str | None:
    """The Date (RFC 5322 section 3.3) in ISO 8601, UTC; `-0000` and no zone are read as UTC."""
    if not value:
        return None
    text = _COLON_OFFSET.sub(r"\1\2", value[:200])  # "-04:00", as some providers write it
    try:
        moment = parsedate_to_datetime(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# -- MIME parts ------------------------------------------------------------------------------------


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # an unreadable Content-Type is text/plain (RFC 2045 section 5.2)
        return "text/plain"


def _param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _text(part: Message) -> str:
    """A text part's content, decoded from its transfer encoding and charset, at most `_MAX_TEXT`
    bytes of it; an unknown or bogus charset is read as UTF-8 with replacement characters."""
    try:
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    payload = payload[:_MAX_TEXT]
    if charset and re.fullmatch(r"[A-Za-z0-9._:+\-]{1,40}", charset):
        try:
            return payload.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    return payload.decode("utf-8", "replace")


# -- provider payloads -----------------------------------------------------------------------------


def _mapping(payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise MailError("an inbound-parse payload is an object of fields")
    return payload


def _string(value: object) -> str | None:
    """A form or JSON field as text: the first of repeated form values, bytes read as UTF-8."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _raw_field(value: object, limits: MailLimits) -> bytes | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > limits.max_bytes:
        raise MailError(f"message is over the {limits.max_bytes}-byte limit")
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _lookup(fields: Mapping[str, Any], *names: str) -> str | None:
    """A field by any of `names`, exactly first, then ignoring case (form keys keep the header's
    own capitalisation: `Message-Id`, `In-Reply-To`)."""
    for name in names:
        value = _string(fields.get(name))
        if value is not None:
            return value
    lower = {name.lower() for name in names}
    for key, value in fields.items():
        if isinstance(key, str) and key.lower() in lower:
            found = _string(value)
            if found is not None:
                return found
    return None


def _with_defaults(headers: list[tuple[str, str]], fields: Mapping[str, Any], defaults: Iterable[tuple[str, Sequence[str]]]
                   ) -> list[tuple[str, str]]:
    """`headers` plus, for each header it lacks, the payload's top-level field of that meaning."""
    present = {name.lower() for name, _ in headers}
    extra = []
    for header, keys in defaults:
        if header.lower() not in present:
            value = _lookup(fields, *keys)
            if value:
                extra.append((header, value))
    return extra + headers


_COMMON_FIELDS: Final = (
    ("From", ("from", "From", "sender")), ("Subject", ("subject", "Subject")), ("Date", ("Date", "date")),
    ("Message-ID", ("Message-Id", "Message-ID")), ("In-Reply-To", ("In-Reply-To",)), ("References", ("References",)),
    ("Auto-Submitted", ("Auto-Submitted",)), ("Precedence", ("Precedence",)), ("X-Autoreply", ("X-Autoreply",)),
    ("X-Autorespond", ("X-Autorespond",)),
)


def _sendgrid(fields: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """SendGrid Inbound Parse: `headers` is the raw header block; `from`, `subject`, `text`."""
    headers = _header_block(_string(fields.get("headers")) or "")
    return _with_defaults(headers, fields, _COMMON_FIELDS), _string(fields.get("text")) or ""


def _mailgun(fields: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """Mailgun routes: `message-headers` is a JSON list of [name, value] (a string in a form post);
    the routed fields `sender`, `from`, `subject`, `In-Reply-To`, `References`, `body-plain`."""
    listed: object = fields.get("message-headers")
    if isinstance(listed, str | bytes):
        try:
            listed = json.loads(listed)
        except ValueError:  # unreadable: the top-level fields are all there is
            listed = []
    headers = []
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, list | tuple) and len(item) == 2:
                name, value = _string(item[0]), _string(item[1])
                if name is not None and value is not None:
                    headers.append((name, value))
    text = _string(fields.get("body-plain")) or _string(fields.get("stripped-text")) or ""
    return _with_defaults(headers, fields, _COMMON_FIELDS), text


def _postmark(fields: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """Postmark inbound: `Headers` is a list of {Name, Value} without From, Subject or Date, which
    are fields of their own; `MessageID` is Postmark's id, used when no Message-ID header came."""
    headers = []
    listed = fields.get("Headers")
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, Mapping):
                name, value = _string(item.get("Name")), _string(item.get("Value"))
                if name is not None and value is not None:
                    headers.append((name, value))
    full = fields.get("FromFull")
    sender = _string(full.get("Email")) if isinstance(full, Mapping) else None
    own = [
        ("From", (sender or _string(fields.get("From")) or "")), ("Subject", _string(fields.get("Subject")) or ""),
        ("Date", _string(fields.get("Date")) or ""),
    ]
    present = {name.lower() for name, _ in headers}
    extra = [(name, value) for name, value in own if value and name.lower() not in present]
    postmark_id = _string(fields.get("MessageID"))
    if "message-id" not in present and postmark_id and _TOKEN.fullmatch(postmark_id):
        extra.append(("Message-ID", f"<{postmark_id}>"))
    return extra + headers, _string(fields.get("TextBody")) or ""


def _header_block(block: str) -> list[tuple[str, str]]:
    """A raw header block (as SendGrid posts it) as (name, unfolded value) pairs."""
    headers: list[tuple[str, str]] = []
    for line in re.split(r"\r\n|\r|\n", block):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return headers


def _rebuild(headers: list[tuple[str, str]], text: str) -> bytes:
    """A single-part text/plain message from a provider's header fields and text body.

    A field's name must be RFC 5322 printable ASCII without a colon, and CR or LF in its value
    becomes a space: a value cannot start another field. The provider's MIME headers are dropped
    because the body is no longer what they describe."""
    lines = []
    for name, value in headers:
        name = name.strip()
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _MIME_HEADERS:
            continue
        lines.append(name + ": " + _SPACES.sub(" ", _NEWLINES.sub(" ", value)).strip())
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    message = "\r\n".join(lines) + "\r\n\r\n" + text
    try:
        return message.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return message.encode("utf-8", "replace")
