"""What recipients' mail clients call: the open pixel, tracked links and one-click unsubscribe.

Every link carries a token the kernel signed (`dee.kernel.tokens`); it is verified with the key
alone, and a forged or altered one is a 404 that records nothing. An open or a click is one
event per email (and per URL): a pixel loaded ten times, or a link clicked twice, is applied
once. An unsubscribe is RFC 8058's one-click POST; a GET shows a page whose button makes that
POST, because mail scanners fetch every link of a message and must never unsubscribe anyone.
Unsubscribe links never expire (the law wants them honoured long after the mail was sent);
opens and clicks do, after `ingress.token_ttl_days` (410 Gone).
"""

from __future__ import annotations

import base64
import html

from aiohttp import web

from dee.ids import now_iso
from dee.ingress.context import INGRESS, Ingress, page
from dee.ingress.deliver import Delivery
from dee.ingress.forms import read_form
from dee.ingress.mail import MailError, MailLimits
from dee.ingress.server import read_body
from dee.kernel.tokens import LinkToken, TokenError, read

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # a transparent 1x1 GIF
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}
ONE_CLICK = ("List-Unsubscribe", "One-Click")
MAX_FORM_BYTES = 4096  # a one-click POST is one short field
FORM_LIMITS = MailLimits(max_bytes=MAX_FORM_BYTES + 8192, max_parts=8, max_lines=200)  # the form and its Content-Type


async def _token(request: web.Request, kind: str, url: str | None = None, expires: bool = True) -> LinkToken:
    ingress = request.app[INGRESS]
    now = await ingress.engine.now_tick() if expires else None
    try:
        token = read(request.match_info["token"], ingress.engine.link_keys, now, url)
    except TokenError as exc:
        if str(exc) == "expired":
            raise web.HTTPGone(text="this link has expired\n", headers=NO_STORE) from None
        raise web.HTTPNotFound(text="not found\n", headers=NO_STORE) from None
    if token.kind != kind:
        raise web.HTTPNotFound(text="not found\n", headers=NO_STORE)
    return token


async def opened(request: web.Request) -> web.Response:
    token = await _token(request, "o")
    await request.app[INGRESS].deliver([Delivery(
        type="email.opened", identity=(token.run_id, token.step_id), contact_id=token.contact_id, run_id=token.run_id,
        step_id=token.step_id, occurred_at=now_iso(),
    )])  # fmt: skip
    return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)


async def clicked(request: web.Request) -> web.Response:
    url = request.query.get("u")
    if not url or not url.startswith(("https://", "http://")):
        raise web.HTTPNotFound(text="not found\n", headers=NO_STORE)
    token = await _token(request, "c", url)  # only the URL the token was made for: never an open redirect
    await request.app[INGRESS].deliver([Delivery(
        type="email.clicked", identity=(token.run_id, token.step_id, token.url_digest), contact_id=token.contact_id,
        run_id=token.run_id, step_id=token.step_id, data={"url": url}, occurred_at=now_iso(),
    )])  # fmt: skip
    raise web.HTTPFound(url, headers=NO_STORE)


async def unsubscribe_page(request: web.Request) -> web.Response:
    """The confirmation page: nothing is recorded until its button is pressed."""
    await _token(request, "u", expires=False)
    action = html.escape(request.path, quote=True)
    body = page(
        "Unsubscribe",
        f'<p>Stop receiving these emails?</p><form method="post" action="{action}">'
        f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
        '<button type="submit">Unsubscribe</button></form>',
    )
    return web.Response(text=body, content_type="text/html", headers=NO_STORE)


async def unsubscribe(request: web.Request) -> web.Response:
    """RFC 8058: a POST whose body is `List-Unsubscribe=One-Click` (form-encoded or multipart)."""
    token = await _token(request, "u", expires=False)
    body = await read_body(request, MAX_FORM_BYTES)
    header = request.headers.get("Content-Type", "")  # not `request.content_type`: it recurses on a hostile header
    try:
        fields = read_form(header.partition(";")[0].strip().lower(), header, body, FORM_LIMITS)
    except MailError:
        fields = {}
    if str(fields.get(ONE_CLICK[0], "")).strip() != ONE_CLICK[1]:
        raise web.HTTPBadRequest(text="an unsubscribe is a POST of List-Unsubscribe=One-Click (RFC 8058)\n", headers=NO_STORE)
    ingress: Ingress = request.app[INGRESS]
    # contact-level: every run of the contact stops, and the suppression is recorded; the data
    # says which email it came from
    await ingress.deliver([Delivery(
        type="email.unsubscribed", identity=(token.contact_id, token.run_id, token.step_id), contact_id=token.contact_id,
        data={"runId": token.run_id, "stepId": token.step_id, "via": "one-click"}, occurred_at=now_iso(),
    )])  # fmt: skip
    return web.Response(text=page("Unsubscribed", "<p>You have been unsubscribed.</p>"), content_type="text/html",
                        headers=NO_STORE)  # fmt: skip
