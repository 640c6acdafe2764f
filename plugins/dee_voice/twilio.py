"""The `twilio` voice adapter: calls placed over Twilio's REST API (or a compatible provider's).

A call is `POST {api_url}/2010-04-01/Accounts/{account_sid}/Calls.json` with basic auth (the
account and its token) and the form fields `To`, `From`, `Twiml` (the script the kernel
rendered), `StatusCallback` with the call's run, step, contact and call id in its query (the
provider signs the whole URL with the account's token, `X-Twilio-Signature`, so the ingress can
trust them), and `MachineDetection` when the step asks for voicemail detection.

The provider's answer: 2xx with the call's `sid` is a placed call (its outcome comes later from
the status callbacks); 429 is rate_limited; 5xx, a timeout or a connection that fails is
transient; any other 4xx is permanent. A placed call's sid is kept by idempotency key
(`dee.plugin.ledger`), so a retried dispatch never places a second call.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from dee.plugin.contracts import DispatchRequest, DispatchResponse
from dee.plugin.ledger import MemorySends, RedisSends, sends_for

STATUS_EVENTS = "initiated ringing answered completed"


class TwilioAdapter:
    name = "twilio"
    channel = "voice"

    def __init__(self, config: Any) -> None:
        self.settings = config.channels.voice
        self.max_in_flight = self.settings.max_in_flight  # the dispatcher hands at most this many at once
        self._config = config
        self._sends: MemorySends | RedisSends | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def sends(self) -> MemorySends | RedisSends:
        if self._sends is None:  # built on first use: an adapter that is not selected opens nothing
            self._sends = sends_for(self._config, "voice", lock_ms=3 * self.settings.http_timeout_ms)
        return self._sends

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            if not (s.api_url and s.account_sid and s.auth_token):
                raise ValueError("channels.voice needs api_url, account_sid and auth_token for the twilio adapter")
            self._session = aiohttp.ClientSession(
                headers={"Authorization": "Basic " + base64.b64encode(f"{s.account_sid}:{s.auth_token}".encode()).decode()},
                timeout=aiohttp.ClientTimeout(total=s.http_timeout_ms / 1000),
                connector=aiohttp.TCPConnector(limit=s.max_in_flight),
            )
        return self._session

    def form(self, request: DispatchRequest) -> dict[str, str]:
        """The form fields of the call (what the provider receives)."""
        message = request.message
        fields = {"To": str(message["to"]), "From": str(message["from"]), "Twiml": str(message["twiml"])}
        if self.settings.status_callback_url:
            query = urlencode({"run": request.run_id, "step": request.step_id, "contact": request.contact_id,
                               "call": request.message_id})  # fmt: skip
            fields.update(StatusCallback=f"{self.settings.status_callback_url}?{query}", StatusCallbackMethod="POST",
                          StatusCallbackEvent=STATUS_EVENTS)  # fmt: skip
        voicemail = message.get("voicemail") or {}
        if voicemail.get("detect"):
            fields["MachineDetection"] = "DetectMessageEnd"
        if message.get("maxDurationMs"):
            fields["TimeLimit"] = str(max(1, int(message["maxDurationMs"]) // 1000))
        return fields

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        return await self.sends.once(request.idempotency_key, lambda: self._place(request))

    async def _place(self, request: DispatchRequest) -> DispatchResponse:
        url = f"{str(self.settings.api_url).rstrip('/')}/2010-04-01/Accounts/{self.settings.account_sid}/Calls.json"
        try:
            async with self._client().post(url, data=self.form(request)) as answer:
                body = await answer.text()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return DispatchResponse("failed", "transient", f"{type(exc).__name__}: {exc}")
        except ValueError as exc:  # not configured: no call can be placed until it is
            return DispatchResponse("failed", "permanent", str(exc))
        if 200 <= status < 300:
            try:
                sid = str(msgspec.json.decode(body)["sid"])
            except (msgspec.DecodeError, KeyError, TypeError):
                return DispatchResponse("failed", "transient", f"HTTP {status} without a call sid: {body[:200]}")
            return DispatchResponse("delivered", data={"callSid": sid})
        kind = "rate_limited" if status == 429 else "transient" if status >= 500 else "permanent"
        return DispatchResponse("failed", kind, f"HTTP {status}: {body[:500]}", data={"httpStatus": status})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if isinstance(self._sends, RedisSends):
            await self._sends.close()

