"""The adapter against the fake API over loopback HTTP: what it sends, how each answer maps onto
the kernel's error kinds, at most one send per idempotency key, and checked settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dee_sendgrid import SendGridAdapter, load_settings
from fake_sendgrid import FakeSendGrid

from dee import EngineConfig
from dee.plugin.contracts import DispatchRequest

MESSAGE: dict[str, Any] = {
    "to": "ada@acme.test", "from": "sales@dee.test", "replyTo": "ada-replies@dee.test", "subject": "Hello",
    "text": "Hi Ada", "html": "<p>Hi Ada</p>",
    "headers": {"Message-ID": "<k1.run-1@dee.local>", "List-Unsubscribe": "<https://t.dee.local/u/x>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-SMTPAPI": "{}"},
}  # fmt: skip


def request(key: str = "k1", message: dict[str, Any] | None = None) -> DispatchRequest:
    return DispatchRequest(run_id="run-1", step_id="s", channel="email", idempotency_key=key,
                           message_id=f"<{key}.run-1@dee.local>", attempt=1, message=message or MESSAGE, tick=0)  # fmt: skip


def adapter(fake: FakeSendGrid, **settings: Any) -> SendGridAdapter:
    config = EngineConfig(database="memory://")
    return SendGridAdapter(config, load_settings({"api_key": fake.api_key, "base_url": fake.url, **settings}))


async def test_a_message_goes_out_as_sendgrid_documents_it(sendgrid: FakeSendGrid) -> None:
    a = adapter(sendgrid)
    try:
        answer = await a.send(request())
    finally:
        await a.close()
    assert answer.status == "delivered" and answer.data["providerMessageId"] == "fake-1"
    [body] = sendgrid.accepted
    assert body["personalizations"] == [{"to": [{"email": "ada@acme.test"}]}]
    assert body["from"] == {"email": "sales@dee.test", "name": "DEE"} and body["reply_to"] == {"email": "ada-replies@dee.test"}
    assert body["content"] == [{"type": "text/plain", "value": "Hi Ada"}, {"type": "text/html", "value": "<p>Hi Ada</p>"}]
    assert body["custom_args"] == {"dee_message_id": "<k1.run-1@dee.local>"}  # what the webhook's events echo
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "X-SMTPAPI" not in body["headers"]  # SMTP-only tagging: the API has custom_args


async def test_one_key_is_sent_once(sendgrid: FakeSendGrid) -> None:
    a = adapter(sendgrid)
    try:
        first, again = await a.send(request()), await a.send(request())
        other = await a.send(request("k2"))
    finally:
        await a.close()
    assert first == again and other.data["providerMessageId"] == "fake-2"
    assert sendgrid.requests == 2


async def test_answers_map_onto_the_kernels_error_kinds(sendgrid: FakeSendGrid) -> None:
    a = adapter(sendgrid)
    try:
        sendgrid.rate_limit_once(30)
        limited = await a.send(request("k-429"))
        sendgrid.queued.append((503, {}))
        unavailable = await a.send(request("k-503"))
        malformed = await a.send(request("k-400", {**MESSAGE, "to": "not-an-address"}))
    finally:
        await a.close()
    assert (limited.error_kind, unavailable.error_kind, malformed.error_kind) == ("rate_limited", "transient", "permanent")
    assert limited.retry_after_ms is not None and 25_000 <= limited.retry_after_ms <= 31_000
    assert malformed.error == "SendGrid 400: personalizations.0.to.0.email: Does not contain a valid address."
    # the retried keys go out once SendGrid takes them again
    b = adapter(sendgrid)
    try:
        assert (await b.send(request("k-429"))).status == "delivered"
    finally:
        await b.close()


async def test_a_refused_key_is_permanent_and_never_shown(sendgrid: FakeSendGrid) -> None:
    config = EngineConfig(database="memory://")
    a = SendGridAdapter(config, load_settings({"api_key": "SG.wrong-key", "base_url": sendgrid.url}))
    try:
        answer = await a.send(request())
    finally:
        await a.close()
    assert answer.error_kind == "permanent" and answer.error is not None and answer.error.startswith("SendGrid 401:")
    assert "SG.wrong-key" not in repr(answer) and "SG.wrong-key" not in repr(a._settings)


async def test_a_slow_or_absent_api_is_a_transient_failure(sendgrid: FakeSendGrid) -> None:
    sendgrid.delay_s = 1.0
    a = adapter(sendgrid, timeout_s=0.2)
    gone = SendGridAdapter(EngineConfig(database="memory://"), load_settings({"api_key": "k", "base_url": "http://127.0.0.1:9"}))
    try:
        assert (await a.send(request())).error == "SendGrid unreachable: TimeoutError"
        assert (await gone.send(request())).error_kind == "transient"
    finally:
        await a.close()
        await gone.close()


def test_settings_fail_closed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs api_key or api_key_file"):
        load_settings({})
    with pytest.raises(ValueError, match="base_url must be https"):
        load_settings({"api_key": "k", "base_url": "http://api.example.com"})
    with pytest.raises(ValueError, match="No such file"):
        load_settings({"api_key_file": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match="api_keys"):
        load_settings({"api_keys": "k"})
    secret = tmp_path / "key"
    secret.write_text("SG.from-file\n")
    assert load_settings({"api_key_file": str(secret), "timeout_s": "2.5"}).key == "SG.from-file"
