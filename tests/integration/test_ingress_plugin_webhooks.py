"""A plugin's webhook receiver (`dee_webhook_receivers`) on a real ingress: a throwaway plugin for
an imaginary provider ("acme-esp", HMAC-SHA256 of the body in a header) whose events reach the
runs of the emails they name; forged, malformed and buggy answers record nothing and the
ingress stays up."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from dee import EngineConfig
from dee.plugin import hookimpl
from dee.plugin.contracts import InboundEvent, PayloadError, SignatureError
from dee.plugin.manager import PluginManager
from tests.integration.ingress_helpers import Deployment, answer, running

SECRET = b"acme-webhook-secret"
KINDS = {"open": "email.opened", "click": "email.clicked"}


class AcmeReceiver:
    """What a plugin author writes: verify first, then map the provider's events."""

    name = "acme-esp"

    def __init__(self) -> None:
        self.broken = ""  # a test makes the receiver misbehave: "raise" or "bad-event"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Acme-Signature", ""), expected):
            raise SignatureError("the signature does not match")

    def events(self, headers: Mapping[str, str], body: bytes) -> list[InboundEvent]:
        if self.broken == "raise":
            raise KeyError("a bug in the receiver")
        try:
            items = json.loads(body)
            found = [InboundEvent(type=KINDS[i["event"]], provider_event_id=i["id"], message_id=i["message_id"])  # type: ignore[arg-type]
                     for i in items if i["event"] in KINDS]  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise PayloadError(f"not an acme-esp payload ({type(exc).__name__})") from None
        if self.broken == "bad-event":
            return [InboundEvent(type="email.teleported", provider_event_id="x")]  # type: ignore[arg-type]
        return found


class AcmePlugin:
    def __init__(self) -> None:
        self.receiver = AcmeReceiver()

    @hookimpl
    def dee_webhook_receivers(self, config: EngineConfig) -> list[Any]:
        return [self.receiver]


def signed(items: list[dict[str, str]], secret: bytes = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(items).encode()
    return body, {"Content-Type": "application/json", "X-Acme-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest()}


async def post(d: Deployment, request: tuple[bytes, dict[str, str]]) -> tuple[int, Any]:
    body, headers = request
    async with d.http.post(f"{d.base}/webhooks/acme-esp", data=body, headers=headers) as response:
        return await answer(response)


async def test_a_plugins_receiver_delivers_its_providers_events_to_the_runs_once(deployment: EngineConfig) -> None:
    plugin = AcmePlugin()
    async with running(deployment, plugins=PluginManager.load(extra=[("acme", plugin)])) as d:
        run, other = await d.enrol("acme-1"), await d.enrol("acme-2")
        mid = str(d.email_of(run)["Message-ID"])
        request = signed([{"id": "ev-1", "event": "open", "message_id": mid}, {"id": "ev-2", "event": "processed", "message_id": mid},
                          {"id": "ev-3", "event": "click", "message_id": mid}])  # fmt: skip
        assert await post(d, request) == (200, {"accepted": 2, "ignored": 0})
        assert await post(d, request) == (200, {"accepted": 2, "ignored": 0})  # the provider's retry: the same events
        await d.engine.run_until_idle()
        log = await d.event_log(run)
        assert [(t, step, data["provider"]) for t, step, data in log] == [
            ("email.opened", "initial-email", "acme-esp"), ("email.clicked", "initial-email", "acme-esp")]  # once each
        assert await d.event_log(other) == []
        foreign = signed([{"id": "ev-9", "event": "open", "message_id": "<1@mail.elsewhere.example>"}])
        assert await post(d, foreign) == (200, {"accepted": 0, "ignored": 1})


async def test_forged_malformed_and_buggy_requests_record_nothing_and_the_ingress_stays_up(deployment: EngineConfig) -> None:
    plugin = AcmePlugin()
    async with running(deployment, plugins=PluginManager.load(extra=[("acme", plugin)])) as d:
        run = await d.enrol("acme-3")
        event = [{"id": "ev-1", "event": "open", "message_id": str(d.email_of(run)["Message-ID"])}]
        body, headers = signed(event)
        status, text = await post(d, (body, {**headers, "X-Acme-Signature": "0" * 64}))
        assert (status, text) == (403, "the signature does not match\n")
        assert (await post(d, signed(event, secret=b"another secret")))[0] == 403
        assert (await post(d, (body.replace(b"open", b"clic"), headers)))[0] == 403  # altered after signing
        status, text = await post(d, signed([{"no": "id"}]))  # type: ignore[list-item]
        assert (status, text) == (400, "not an acme-esp payload (KeyError)\n")
        for broken in ("raise", "bad-event"):
            plugin.receiver.broken = broken
            status, text = await post(d, signed(event))
            assert (status, text) == (500, "the receiver failed; try again later\n"), broken
        await d.engine.run_until_idle()
        assert await d.event_log(run) == []
        plugin.receiver.broken = ""
        assert await post(d, signed(event)) == (200, {"accepted": 1, "ignored": 0})  # still up, and nothing was used up
        async with d.http.post(f"{d.base}/webhooks/acme-other", data=b"{}") as response:
            assert response.status == 404
