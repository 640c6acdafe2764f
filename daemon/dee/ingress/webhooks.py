"""Providers' callbacks: email webhooks (`POST /webhooks/{provider}`, the built-in providers and
the plugins' webhook receivers) and Twilio's call status callbacks (`POST /voice/twilio/status`).

A body is read whole (bounded, within the request timeout), its signature checked with the
provider's own algorithm (`dee.ingress.signatures`) before a byte of it is interpreted, and
only then mapped to events (`dee.ingress.providers`). A request that is not authentic is a 401
or 403 and records nothing; a payload that is not what the provider documents is a 400, and so is
a body that is not JSON at all, whether the signature covers it or would be inside it. An event
about mail the engine did not send (a Message-ID that is not the deployment's) is ignored with a
2xx, so the provider does not retry it for days.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from aiohttp import web

from dee.ingress import providers
from dee.ingress.context import INGRESS, Ingress, log
from dee.ingress.deliver import Delivery
from dee.ingress.providers import InboundEvent, PayloadError
from dee.ingress.server import read_body
from dee.ingress.signatures import SignatureError, UnreadableBody
from dee.kernel.idempotency import RUN_ID
from dee.plugin.contracts import WebhookReceiver

Reader = Callable[[bytes, web.Request], list[InboundEvent]]
READERS: dict[str, Reader] = {
    "sendgrid": lambda body, request: providers.events_from_sendgrid(body),
    "mailgun": lambda body, request: providers.events_from_mailgun(body),
    "ses": lambda body, request: providers.events_from_ses(body),
    "postmark": lambda body, request: providers.events_from_postmark(body),
    "standard": lambda body, request: providers.events_from_standard_webhooks(body, request.headers.get("webhook-id")),
}


async def _verified(request: web.Request, provider: str) -> bytes:
    ingress: Ingress = request.app[INGRESS]
    verifier = ingress.verifiers.get(provider)
    if verifier is None:  # a provider whose secret is not configured has no route
        raise web.HTTPNotFound(text="not found\n")
    body = await read_body(request)
    try:
        verifier.verify(request.headers, body, ingress.public_url(request), ingress.clock())
    except UnreadableBody as exc:  # not JSON, where the signature would be inside: malformed, not forged
        raise web.HTTPBadRequest(text=f"{exc.reason}\n") from None
    except SignatureError as exc:
        log.info("refused a %s callback: %s", provider, exc.reason)
        if provider == "postmark":
            raise web.HTTPUnauthorized(text=f"{exc.reason}\n", headers={"WWW-Authenticate": 'Basic realm="dee"'}) from None
        raise web.HTTPForbidden(text=f"{exc.reason}\n") from None
    return body


async def webhook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    receiver = request.app[INGRESS].receivers.get(provider)
    if receiver is not None:
        return await _received(request, receiver)
    if provider not in READERS:
        raise web.HTTPNotFound(text="not found\n")
    body = await _verified(request, provider)
    if provider == "ses" and (subscribe := providers.sns_subscribe_url(body)) is not None:
        # nothing is fetched from here: the operator confirms the subscription once
        log.warning("an SNS subscription awaits confirmation: open %s", subscribe)
        return web.json_response({"accepted": 0, "ignored": 0, "subscription": "awaiting confirmation"})
    try:
        events = READERS[provider](body, request)
    except PayloadError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    outcome = await request.app[INGRESS].deliver([_delivery(provider, event) for event in events])
    return web.json_response({"accepted": outcome.accepted, "ignored": outcome.ignored})


async def _received(request: web.Request, receiver: WebhookReceiver) -> web.Response:
    """A plugin's provider: its `verify`, then its `events`; what else it raises or returns is
    its own bug, a 500 (the provider retries), never an event."""
    ingress: Ingress = request.app[INGRESS]
    body = await read_body(request)
    try:
        receiver.verify(request.headers, body, ingress.public_url(request), ingress.clock())
    except SignatureError as exc:
        log.info("refused a %s callback: %s", receiver.name, exc.reason)
        raise web.HTTPForbidden(text=f"{exc.reason}\n") from None
    except Exception as exc:
        raise _receiver_bug(receiver, f"verify raised {type(exc).__name__}") from None
    try:
        events = receiver.events(request.headers, body)
    except PayloadError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    except Exception as exc:
        raise _receiver_bug(receiver, f"events raised {type(exc).__name__}") from None
    if not isinstance(events, list | tuple) or not all(_well_formed(e) for e in events):
        raise _receiver_bug(receiver, "events returned something other than a list of InboundEvent of known types")
    outcome = await ingress.deliver([_delivery(receiver.name, event) for event in events])
    return web.json_response({"accepted": outcome.accepted, "ignored": outcome.ignored})


def _well_formed(event: object) -> bool:
    """An `InboundEvent` as the built-in readers make them (a plugin's is built unvalidated)."""
    return (isinstance(event, InboundEvent) and event.type in providers.EVENT_TYPES
            and isinstance(event.provider_event_id, str) and bool(event.provider_event_id)
            and all(isinstance(v, str | None) for v in (event.message_id, event.recipient, event.occurred_at))
            and isinstance(event.data, dict) and _encodable(event.data))  # fmt: skip


def _encodable(data: dict[str, object]) -> bool:
    try:
        msgspec.json.encode(data)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _receiver_bug(receiver: WebhookReceiver, what: str) -> web.HTTPInternalServerError:
    log.error("webhook receiver %s: %s; answered 500", receiver.name, what)  # the type only: no payload, no secret
    return web.HTTPInternalServerError(text="the receiver failed; try again later\n")


def _delivery(provider: str, event: InboundEvent) -> Delivery:
    data = {**event.data, "provider": provider}
    if event.recipient:
        data["recipient"] = event.recipient
    return Delivery(type=event.type, identity=(provider, event.provider_event_id), message_id=event.message_id, data=data,
                    occurred_at=event.occurred_at)  # fmt: skip


async def twilio_status(request: web.Request) -> web.Response:
    """A call's status: the run, contact and call id are in the callback URL the voice adapter
    gave Twilio, which Twilio's signature covers (the query cannot be altered)."""
    body = await _verified(request, "twilio")
    run_id, contact_id, call_id = (request.query.get(name, "") for name in ("run", "contact", "call"))
    if not (RUN_ID.fullmatch(run_id) and contact_id and call_id):
        raise web.HTTPBadRequest(text="the callback URL names no run, contact and call\n")
    try:
        events = providers.events_from_twilio(body)
    except PayloadError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    # the call id (the step's Message-ID) matches the attempt the step waits for, not an older one
    outcome = await request.app[INGRESS].deliver([Delivery(
        type=event.type, identity=("twilio", event.provider_event_id), contact_id=contact_id, run_id=run_id,
        message_id=call_id, data=event.data, occurred_at=event.occurred_at,
    ) for event in events])  # fmt: skip
    log.debug("twilio status for run %s: %d accepted", run_id, outcome.accepted)
    return web.Response(status=204)
