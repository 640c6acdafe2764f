"""The `smtp` adapter against a real SMTP server on loopback (aiosmtpd): the message as the
server receives it, TLS and AUTH, every row of the reply mapping, a connection dropped in the
middle of DATA, at most one send per idempotency key (also across processes, through Redis),
and the outreach plan sent for real through an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from dee import Engine, EngineConfig, SchedulerConfig, load_plan
from dee.config import ChannelsConfig, EmailChannelConfig, MetricsConfig, SenderConfig
from dee.kernel.effects import DispatchRequest
from dee_email.smtp import SmtpAdapter, error_kind
from tests.peers.smtp import Behaviour, certificate, free_port, smtp_server

TO = "pat@example.com"


def config(port: int, database: str = "memory://", redis: str = "redis://127.0.0.1:6379/0", **email: Any) -> EngineConfig:
    channel = EmailChannelConfig(adapter="smtp", smtp_port=port, sender=SenderConfig(email="sales@acme.test", name="Acme Sales"),
                                 smtp_timeout_ms=3000, **email)  # fmt: skip
    return EngineConfig(database=database, redis=redis, channels=ChannelsConfig(email=channel),
                        scheduler=SchedulerConfig(clock="manual"), metrics=MetricsConfig(enabled=False))  # fmt: skip


def request(key: str = "k" * 64, to: str = TO, html: bool = True) -> DispatchRequest:
    message = {
        "to": to, "from": "sales@acme.test", "replyTo": "pat.owner@acme.test", "subject": "DEE for Acme",
        "text": "Hi Pat,\nplain text.", "html": "<p>Hi <b>Pat</b></p>" if html else None, "templateId": "t",
        "headers": {"Message-ID": f"<{key[:32]}@dee.test>", "List-Unsubscribe": "<https://u.test/unsubscribe/abc>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }  # fmt: skip
    return DispatchRequest("run-1", "initial-email", "email", key, f"<{key[:32]}@dee.test>", 1, message, 0)


async def test_the_message_arrives_with_its_headers_and_both_parts() -> None:
    with smtp_server() as (server, port):
        adapter = SmtpAdapter(config(port))
        response = await adapter.send(request())
        await adapter.close()
    assert response.status == "delivered" and response.data["smtpReply"].startswith("2.0.0 queued")
    [received] = server.received
    mail = received.message
    assert (received.sender, received.recipients) == ("sales@acme.test", [TO])
    assert mail["From"] == "Acme Sales <sales@acme.test>" and mail["To"] == TO and mail["Subject"] == "DEE for Acme"
    assert mail["Reply-To"] == "pat.owner@acme.test" and mail["Message-ID"] == f"<{'k' * 32}@dee.test>"
    assert mail["List-Unsubscribe"] == "<https://u.test/unsubscribe/abc>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and mail["Date"]
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_payload()
    assert text.get_content_type() == "text/plain" and "plain text." in text.get_payload(decode=True).decode()
    assert html.get_content_type() == "text/html" and "<b>Pat</b>" in html.get_payload(decode=True).decode()


async def test_message_id_and_list_unsubscribe_are_sent_verbatim_on_one_line() -> None:
    """A long Message-ID must not be folded and a long unsubscribe URL must not become RFC 2047
    encoded words: mailbox providers read both as they are."""
    message_id = f"<{'k' * 32}.01KDVDNA00000000000000004N@mail.a-long-sending-domain.example>"
    unsubscribe = f"<https://links.acme.test/u/{'t' * 180}>"
    dispatch = request()
    dispatch.message["headers"].update({"Message-ID": message_id, "List-Unsubscribe": unsubscribe})
    with smtp_server() as (server, port):
        adapter = SmtpAdapter(config(port))
        assert (await adapter.send(dispatch)).status == "delivered"
        await adapter.close()
    [received] = server.received
    lines = received.raw.decode("ascii").splitlines()
    assert f"Message-ID: {message_id}" in lines and f"List-Unsubscribe: {unsubscribe}" in lines
    assert received.message["Message-ID"] == message_id


async def test_a_repeated_key_is_answered_without_a_second_send() -> None:
    with smtp_server() as (server, port):
        adapter = SmtpAdapter(config(port))
        first, again = await adapter.send(request()), await adapter.send(request())
        other = await adapter.send(request(key="m" * 64, html=False))
        await adapter.close()
    assert first == again and other.status == "delivered"
    assert server.by_message_id() == {f"<{'k' * 32}@dee.test>": 1, f"<{'m' * 32}@dee.test>": 1}
    assert server.received[1].message.get_content_type() == "text/plain"


@pytest.mark.parametrize(("reply", "kind"), [
    ("421 4.3.2 service not available, closing", "transient"),
    ("451 4.7.1 too many messages, slow down", "rate_limited"),
    ("450 4.2.1 mailbox busy", "soft_bounce"),
    ("451 4.3.0 local error", "soft_bounce"),
    ("452 4.2.2 mailbox full", "soft_bounce"),
    ("550 5.1.1 no such user", "hard_bounce"),
    ("551 5.1.6 user has moved", "hard_bounce"),
    ("553 5.1.3 bad destination address", "hard_bounce"),
    ("550 5.7.1 rejected by policy", "permanent"),
    ("554 5.7.0 spam", "permanent"),
])  # fmt: skip
@pytest.mark.parametrize("stage", ["at_rcpt", "at_data"])
async def test_every_reply_maps_to_its_error_kind(reply: str, kind: str, stage: str) -> None:
    with smtp_server(Behaviour(**{stage: {TO: reply}})) as (server, port):
        adapter = SmtpAdapter(config(port))
        response = await adapter.send(request())
        await adapter.close()
    assert (response.status, response.error_kind) == ("failed", kind)
    assert response.error == reply and response.data["smtpCode"] == int(reply[:3])
    assert server.received == []


def test_the_mapping_without_an_enhanced_status() -> None:
    assert [error_kind(c, "no detail") for c in (421, 450, 451, 452, 550, 553, 554, 530)] == [
        "transient", "soft_bounce", "soft_bounce", "soft_bounce", "permanent", "permanent", "permanent", "permanent"]  # fmt: skip


async def test_connection_failures_and_a_connection_dropped_in_data_are_transient() -> None:
    refused = await SmtpAdapter(config(free_port())).send(request())
    assert (refused.status, refused.error_kind) == ("failed", "transient")
    with smtp_server(Behaviour(drop_in_data={TO})) as (server, port):
        adapter = SmtpAdapter(config(port))
        dropped = await adapter.send(request())
        server.behaviour.drop_in_data.clear()
        retried = await adapter.send(request())  # not settled by the failure: the retry sends
        await adapter.close()
    assert (dropped.status, dropped.error_kind) == ("failed", "transient")
    assert retried.status == "delivered" and len(server.received) == 1


@pytest.mark.parametrize("tls", ["tls", "starttls"])
async def test_tls_and_auth(tls: str, tmp_path: Path) -> None:
    cert = certificate(tmp_path)
    with smtp_server(tls=tls, cert=cert, auth=("dee", "s3cret")) as (server, port):
        good = SmtpAdapter(config(port, smtp_tls=tls, smtp_ca_file=str(cert[0]), smtp_username="dee", smtp_password="s3cret"))
        delivered = await good.send(request())
        await good.close()
        bad = SmtpAdapter(config(port, smtp_tls=tls, smtp_ca_file=str(cert[0]), smtp_username="dee", smtp_password="wrong"))
        refused = await bad.send(request(key="n" * 64))
        untrusted = await SmtpAdapter(config(port, smtp_tls=tls, smtp_username="dee", smtp_password="s3cret")).send(
            request(key="o" * 64))
    assert delivered.status == "delivered" and len(server.received) == 1
    assert (refused.status, refused.error_kind) == ("failed", "permanent") and refused.error.startswith("535")
    assert "s3cret" not in repr(good.settings) and "wrong" not in (refused.error or "")
    assert (untrusted.status, untrusted.error_kind) == ("failed", "transient")  # the certificate is not trusted


async def test_sends_are_once_per_key_across_processes_through_redis(deployment: EngineConfig) -> None:
    with smtp_server() as (server, port):
        shared = config(port, database=deployment.database, redis=deployment.redis)
        shared = msgspec.structs.replace(shared, namespace=deployment.namespace)
        one, two = SmtpAdapter(shared), SmtpAdapter(shared)  # two dispatcher processes, one Redis
        answers = [await one.send(request()), await two.send(request())]
        attempts = await one.sends.attempts()  # type: ignore[union-attr]
        await one.close()
        await two.close()
    assert answers[0] == answers[1] and answers[0].status == "delivered"
    assert len(server.received) == 1 and attempts == {"k" * 64: 1}


async def test_the_outreach_plan_sends_real_mail() -> None:
    with smtp_server(Behaviour(at_rcpt={"gone@example.com": "550 5.1.1 no such user"})) as (server, port):
        async with Engine(config(port)) as engine:
            plan = load_plan("config/plans/sales-outreach-v2.yaml")
            people = [{"id": f"c{i}", "email": f"p{i}@example.com", "phone": "+15550100", "attributes": {"company": "Acme"}}
                      for i in range(3)] + [{"id": "gone", "email": "gone@example.com", "attributes": {"company": "X"}}]  # fmt: skip
            await engine.bulk_execute(plan, people, {"product": "DEE"})
            await engine.advance_clock(10 * 86_400)
            runs = {r.contact_id: r for r in (await engine.list_runs(limit=10)).runs}
    assert runs["gone"].outcome == "undeliverable" and all(runs[f"c{i}"].status == "completed" for i in range(3))
    counts = server.by_message_id()
    assert len(counts) == 9 and set(counts.values()) == {1}  # three emails each for three contacts, each once
    subjects = sorted({r.message["Subject"] for r in server.received})
    assert subjects == ["A different angle on DEE", "Closing the loop on DEE", "DEE for Acme"]  # the cold path
