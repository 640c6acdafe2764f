"""`POST /inbound/email`: mail that comes back. A reply to one of the engine's emails is matched
to its step by `In-Reply-To` / `References` (the Message-IDs name their run) and becomes
`email.replied`; a delivery status notification (RFC 3464, or a plain-text bounce) becomes
`email.bounced` with `kind` hard or soft. Automatic answers (out of office) and mail about
anything else are taken and ignored.

The body is the raw message (`message/rfc822`, or any other type that is not JSON or a form), or
a provider's inbound-parse payload: JSON (Postmark, a Mailgun route's JSON) or a form (SendGrid
Inbound Parse, Mailgun's forward), multipart or URL-encoded. The sender authenticates with HTTP
basic auth, user `dee` and `ingress.inbound_mail_secret` as the password.

What arrives is whatever anyone mailed to the reply address. It is parsed off the event loop, two
messages at a time, with the work bounded (`dee.ingress.mail.read_mime`): a message built to be
slow costs a worker thread a moment, never the ingress its other requests. The request's
Content-Type is read here, not by aiohttp's parser, which recurses once per "(" and takes seconds
over a header of quotes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac

import msgspec
from aiohttp import web

from dee.ingress.context import INGRESS, Ingress
from dee.ingress.deliver import Delivery
from dee.ingress.forms import read_form
from dee.ingress.mail import DEFAULT_LIMITS, InboundMail, MailError, MailLimits, parse_inbound, parse_inbound_json
from dee.ingress.server import read_body

USER = "dee"
BYTES_PER_LINE = 40  # lines a message may have, per byte of `max_mail_bytes` (base64 has 78 to a line)


def _authorized(request: web.Request, secret: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{USER}:{secret}".encode()
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


async def inbound_email(request: web.Request) -> web.Response:
    ingress: Ingress = request.app[INGRESS]
    secret = ingress.settings.inbound_mail_secret
    if not secret:
        raise web.HTTPNotFound(text="not found\n")
    if not _authorized(request, secret):
        raise web.HTTPUnauthorized(text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="dee inbound mail"'})
    most = ingress.settings.max_mail_bytes
    body = await read_body(request, most)
    limits = MailLimits(max_bytes=most, max_lines=max(DEFAULT_LIMITS.max_lines, most // BYTES_PER_LINE))
    header = request.headers.get("Content-Type", "")
    media_type = header.partition(";")[0].strip().lower()
    parsing = asyncio.get_running_loop().run_in_executor(ingress.parsers, _parse, media_type, header, body, ingress.config.message_domain,
                                                         limits)  # fmt: skip
    try:
        mail = await parsing
    except MailError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if mail is None or mail.kind == "auto_reply":
        return web.json_response({"accepted": 0, "ignored": 1})
    outcome = await ingress.deliver([_delivery(mail)])
    return web.json_response({"accepted": outcome.accepted, "ignored": outcome.ignored})


def _parse(content_type: str, header: str, body: bytes, domain: str, limits: MailLimits) -> InboundMail | None:
    if content_type == "application/json":
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise MailError("body is not JSON") from None
        if not isinstance(payload, dict):
            raise MailError("an inbound-parse payload is a JSON object")
        return parse_inbound_json(payload, domain, limits=limits)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return parse_inbound_json(read_form(content_type, header, body, limits), domain, limits=limits)
    return parse_inbound(body, domain, limits=limits)


def _delivery(mail: InboundMail) -> Delivery:
    if mail.kind == "bounce":
        data = {"kind": mail.bounce_kind or "soft", "status": mail.status, "reason": mail.diagnostic, "recipient": mail.recipient}
        kind = "email.bounced"
    else:
        data = {"from": mail.sender, "subject": mail.subject}
        kind = "email.replied"
    return Delivery(
        type=kind, identity=("mail", mail.received_message_id), message_id=mail.message_id,
        data={k: v for k, v in data.items() if v is not None}, occurred_at=mail.occurred_at,
    )  # fmt: skip
