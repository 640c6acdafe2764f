"""The `sendgrid` email adapter: one `POST /v3/mail/send` per action, at most once per key.

An action's message (what the `sendEmail` step rendered: to, from, subject, text, html, headers)
becomes SendGrid's JSON: one personalization to the one recipient, the text and HTML parts, the
headers DEE decided (Message-ID, List-Unsubscribe and its one-click Post) and the custom argument
`dee_message_id` that SendGrid echoes on every webhook event. SendGrid answers `202 Accepted`
with `X-Message-Id`, its own id of the message, kept with the result.

Its answers are mapped onto the kernel's error kinds: `429` is `rate_limited` with the wait its
`X-RateLimit-Reset` names; `5xx`, a dropped connection and a timeout are transient; any other
`4xx` (a malformed message, a refused key, a payload too large) is permanent, with SendGrid's
own error messages. The key is never part of an error or a log line.

SendGrid has no idempotency key of its own: a key whose send was accepted is answered from
`dee.plugin.ledger` without sending again; a crash after SendGrid accepted and before that answer
was stored sends again, with the same Message-ID (which receiving systems use to deduplicate).
"""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import msgspec

from dee.plugin.contracts import DispatchRequest, DispatchResponse
from dee.plugin.ledger import MemorySends, RedisSends, sends_for
from dee_sendgrid.settings import SendGridSettings

MESSAGE_ID_TAG = "dee_message_id"  # the custom argument the ingress reads off SendGrid's events
# headers SendGrid sets itself or refuses in `headers` (its API documents them as reserved)
RESERVED = frozenset({"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding",
                      "to", "from", "subject", "reply-to", "cc", "bcc", "x-smtpapi"})  # fmt: skip


def mail_body(message: dict[str, Any], message_id: str, sender_name: str) -> dict[str, Any]:
    """SendGrid's v3 `mail/send` JSON for one action."""
    content = [{"type": "text/plain", "value": str(message.get("text") or " ")}]
    if message.get("html"):
        content.append({"type": "text/html", "value": str(message["html"])})
    sender = {"email": str(message["from"])}
    if sender_name:
        sender["name"] = sender_name
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": str(message["to"])}]}],
        "from": sender,
        "subject": str(message["subject"]),
        "content": content,
        "headers": {k: str(v) for k, v in (message.get("headers") or {}).items() if k.lower() not in RESERVED},
        "custom_args": {MESSAGE_ID_TAG: message_id},
    }
    if message.get("replyTo"):
        body["reply_to"] = {"email": str(message["replyTo"])}
    return body


def _errors(payload: bytes) -> str:
    """SendGrid's error messages (`{"errors": [{"message", "field"}]}`), or a short excerpt."""
    try:
        found = msgspec.json.decode(payload)
        return "; ".join(f"{e.get('field') or 'request'}: {e.get('message')}" for e in found["errors"])[:500]
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return payload[:200].decode("utf-8", "replace")


def _retry_after_ms(headers: Any, now: float) -> int | None:
    reset = headers.get("X-RateLimit-Reset")
    try:
        return max(1000, math.ceil((float(reset) - now) * 1000)) if reset is not None else None
    except ValueError:
        return None


class SendGridAdapter:
    name = "sendgrid"
    channel = "email"

    def __init__(self, config: Any, settings: SendGridSettings | None) -> None:
        self._config = config
        self._settings = settings
        self.max_in_flight = settings.max_in_flight if settings else 1
        self.sender_name = config.channels.email.sender.name if config is not None else ""
        self._sends: MemorySends | RedisSends | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def unselected(cls) -> SendGridAdapter:
        """What `dee plugins` lists when the deployment sends with another adapter."""
        return cls(None, None)

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        if self._settings is None:
            return DispatchResponse("failed", "permanent", "the sendgrid adapter is not selected ([channels.email] adapter)")
        if self._sends is None:
            self._sends = sends_for(self._config, "email", lock_ms=int(3000 * self._settings.timeout_s))
        return await self._sends.once(request.idempotency_key, lambda: self._post(request))

    async def _post(self, request: DispatchRequest) -> DispatchResponse:
        assert self._settings is not None
        try:
            body = mail_body(request.message, request.message_id, self.sender_name)
        except KeyError as exc:
            return DispatchResponse("failed", "permanent", f"the message has no {exc.args[0]}")
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, headers={"Authorization": f"Bearer {self._settings.key}"})
        url = self._settings.base_url.rstrip("/") + "/v3/mail/send"
        try:
            async with self._session.post(url, data=msgspec.json.encode(body), headers={"Content-Type": "application/json"}) as reply:
                payload = await reply.read()
                status, headers = reply.status, reply.headers
        except (TimeoutError, aiohttp.ClientError) as exc:  # refused, dropped, timed out
            return DispatchResponse("failed", "transient", f"SendGrid unreachable: {type(exc).__name__}")
        if status in (200, 202):
            provider_id = headers.get("X-Message-Id", "")
            return DispatchResponse("delivered", data={"messageId": request.message_id, "providerMessageId": provider_id})
        error = f"SendGrid {status}: {_errors(payload)}"
        if status == 429:
            return DispatchResponse("failed", "rate_limited", error, retry_after_ms=_retry_after_ms(headers, time.time()))
        if status >= 500:
            return DispatchResponse("failed", "transient", error)
        return DispatchResponse("failed", "permanent", error, data={"httpStatus": status})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if isinstance(self._sends, RedisSends):
            await self._sends.close()
