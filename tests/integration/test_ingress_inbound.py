"""Inbound mail over real HTTP (`POST /inbound/email`): replies to an email the smtp adapter really
sent to aiosmtpd (In-Reply-To / References naming its Message-ID) become `email.replied` and end
the run as replied; RFC 3464 delivery reports quoting its headers become `email.bounced`, hard or
soft; providers' inbound-parse payloads (JSON and forms) are read as their raw mail would be;
automatic answers are taken and ignored; malformed MIME is refused or ignored, never a 500, and
the ingress stays up; the sender must authenticate."""

from __future__ import annotations

import base64
import json
import time
from email.utils import formatdate
from typing import Any

import aiohttp

from dee import EngineConfig
from tests.integration.ingress_helpers import Deployment, answer, running

SECRET = "inbound-mail-s3cret"
SALES = "sales@acme.test"


def basic(user: str = "dee", password: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def inbound(d: Deployment, body: Any, content_type: str | None = "message/rfc822", headers: dict[str, str] | None = None,
                  ) -> tuple[int, Any]:  # fmt: skip
    sent = {**basic(), **({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    async with d.http.post(f"{d.base}/inbound/email", data=body, headers=sent) as response:
        return await answer(response)


async def events(d: Deployment, run_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    return await d.event_log(run_id)


def ids(d: Deployment, run_id: str) -> tuple[str, str]:
    """The Message-ID and recipient of the email the run sent, as aiosmtpd received them."""
    mail = d.email_of(run_id)
    return str(mail["Message-ID"]), str(mail["To"])


def headers_of(d: Deployment, run_id: str) -> str:
    """The header block of the email the run sent, byte for byte as aiosmtpd received it."""
    raw = next(r.raw for r in d.mail.received if f".{run_id}@" in str(r.message["Message-ID"]))
    return raw.split(b"\r\n\r\n", 1)[0].decode()


def reply(frm: str, subject: str, *headers: str, body: str = "Yes, next Tuesday works.\r\n\r\n> Teams like Acme use DEE\r\n") -> bytes:
    lines = [f"From: Jane Doe <{frm}>", f"To: Acme Sales <{SALES}>", f"Subject: {subject}", f"Date: {formatdate(time.time())}",
             "MIME-Version: 1.0", *headers, "Content-Type: text/plain; charset=utf-8"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def raw_reply(mid: str, to: str) -> bytes:
    return reply(to, "Re: DEE for Acme", "Message-ID: <hostile@mail.acme.test>", f"In-Reply-To: <{'e' * 32}@elsewhere.test>")


def dsn(d: Deployment, run_id: str, action: str, status: str, diagnostic: str, own_id: str) -> bytes:
    """An RFC 3464 report as a receiving MTA sends it: human text, the delivery-status fields, and
    the headers of the email that failed (RFC 6522 text/rfc822-headers)."""
    _, to = ids(d, run_id)
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.acme.test>\r\nTo: {SALES}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {formatdate(time.time())}\r\nMessage-ID: {own_id}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"\r\n\r\n'
        "--B0UND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host mx.acme.test.\r\n\r\nI'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n\r\n<{to}>: {diagnostic}\r\n\r\n"
        "--B0UND\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.acme.test\r\nArrival-Date: " + formatdate(time.time()) + "\r\n\r\n"
        f"Final-Recipient: rfc822; {to}\r\nOriginal-Recipient: rfc822;{to}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Remote-MTA: dns; mail.acme.test\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--B0UND\r\nContent-Type: text/rfc822-headers\r\n\r\n" + headers_of(d, run_id) + "\r\n\r\n--B0UND--\r\n"
    ).encode()


async def test_replies_are_email_replied_and_end_the_run_as_replied(deployment: EngineConfig) -> None:
    async with running(deployment, inbound_mail_secret=SECRET) as d:
        direct, quoted, postmark, sendgrid, mailgun, untouched = [await d.enrol(f"r{i}") for i in range(6)]
        # In-Reply-To names the engine's Message-ID (a mail client answering the email)
        mid, to = ids(d, direct)
        raw = reply(to, "Re: DEE for Acme", "Message-ID: <reply-1@mail.acme.test>", f"In-Reply-To: {mid}", f"References: {mid}")
        assert await inbound(d, raw) == (200, {"accepted": 1, "ignored": 0})
        assert await inbound(d, raw) == (200, {"accepted": 1, "ignored": 0})  # delivered twice: one event
        # an answer to a colleague's forward: In-Reply-To is theirs, References still holds ours
        mid, to = ids(d, quoted)
        raw = reply(to, "Re: Fwd: DEE for Acme", "Message-ID: <reply-2@mail.acme.test>", "In-Reply-To: <fwd-9@mail.acme.test>",
                    f"References: <older@mail.acme.test> {mid} <fwd-9@mail.acme.test>")  # fmt: skip
        assert await inbound(d, raw, content_type=None) == (200, {"accepted": 1, "ignored": 0})  # no type: raw mail
        # providers' inbound parse: Postmark's JSON, SendGrid's multipart form, Mailgun's urlencoded route
        mid, to = ids(d, postmark)
        payload = {"From": to, "FromFull": {"Email": to, "Name": "Pat"}, "To": SALES, "Subject": "Re: DEE for Acme",
                   "Date": formatdate(time.time()), "MessageID": "6b1f4a3e-2f8e-4a8e-9d0b-6c4f6a0e1d2c", "TextBody": "Sounds good.",
                   "Headers": [{"Name": "Message-ID", "Value": "<pm-77@mail.acme.test>"},
                               {"Name": "In-Reply-To", "Value": mid}]}  # fmt: skip
        assert await inbound(d, json.dumps(payload), "application/json") == (200, {"accepted": 1, "ignored": 0})
        mid, to = ids(d, sendgrid)
        form = aiohttp.FormData()
        form.add_field("headers", f"From: Sam <{to}>\nTo: {SALES}\nSubject: Re: DEE for Acme\nMessage-ID: <sg-5@mail.acme.test>\n"
                                  f"In-Reply-To: {mid}\nReferences: {mid}\n")  # fmt: skip
        form.add_field("from", f"Sam <{to}>")
        form.add_field("subject", "Re: DEE for Acme")
        form.add_field("text", "Let's talk.")
        form.add_field("attachment1", b"\x89PNG\r\n\x1a\n", filename="logo.png", content_type="image/png")
        async with d.http.post(f"{d.base}/inbound/email", data=form, headers=basic()) as response:
            assert response.content_type == "application/json" and (await response.json()) == {"accepted": 1, "ignored": 0}
        mid, to = ids(d, mailgun)
        fields = {"sender": to, "from": f"Max <{to}>", "subject": "Re: DEE for Acme", "body-plain": "Call me.",
                  "message-headers": json.dumps([["Message-Id", "<mg-3@mail.acme.test>"], ["In-Reply-To", mid], ["From", to]])}  # fmt: skip
        async with d.http.post(f"{d.base}/inbound/email", data=fields, headers=basic()) as response:
            assert (await response.json()) == {"accepted": 1, "ignored": 0}
        await d.engine.run_until_idle()

        for run_id in (direct, quoted, postmark, sendgrid, mailgun):
            _, to = ids(d, run_id)
            [(event_type, step, data)] = await events(d, run_id)
            subject = "Re: Fwd: DEE for Acme" if run_id == quoted else "Re: DEE for Acme"
            assert (event_type, step, data["from"], data["subject"]) == ("email.replied", "initial-email", to, subject), run_id
            run = await d.engine.get_run(run_id)
            assert (run.status, run.outcome) == ("completed", "replied"), run_id  # the plan's reply exit, at once
        assert await events(d, untouched) == []
        assert (await d.engine.get_run(untouched)).status == "waiting"
        # a reply to mail that is not the engine's, or to a run it does not know: taken, ignored
        for refers in ("<someone@mail.acme.test>", f"<{'a' * 32}.01NOSUCHRUN000000000000000@dee.local>", f"<{'a' * 32}@dee.local>"):
            raw = reply("x@acme.test", "Re: hello", "Message-ID: <x1@mail.acme.test>", f"In-Reply-To: {refers}")
            assert await inbound(d, raw) == (200, {"accepted": 0, "ignored": 1}), refers


async def test_delivery_reports_are_bounces_hard_and_soft(deployment: EngineConfig) -> None:
    async with running(deployment, inbound_mail_secret=SECRET) as d:
        hard, soft, delivered = [await d.enrol(f"b{i}") for i in range(3)]
        sent = len(d.mail.received)
        report = dsn(d, hard, "failed", "5.1.1", "550 5.1.1 <b0@acme.test>: Recipient address rejected: User unknown",
                     "<dsn-1@mx.acme.test>")  # fmt: skip
        assert await inbound(d, report) == (200, {"accepted": 1, "ignored": 0})
        assert await inbound(d, report) == (200, {"accepted": 1, "ignored": 0})  # the same report twice: one bounce
        delayed = dsn(d, soft, "delayed", "4.2.2", "452 4.2.2 <b1@acme.test>: Mailbox full", "<dsn-2@mx.acme.test>")
        assert await inbound(d, delayed) == (200, {"accepted": 1, "ignored": 0})
        relayed = dsn(d, delivered, "relayed", "2.0.0", "250 2.0.0 OK", "<dsn-3@mx.acme.test>")  # nothing failed
        assert await inbound(d, relayed) == (200, {"accepted": 0, "ignored": 1})
        await d.engine.run_until_idle()

        [(event_type, step, data)] = await events(d, hard)
        assert (event_type, step) == ("email.bounced", "initial-email")
        assert (data["kind"], data["status"], data["recipient"]) == ("hard", "5.1.1", "b0@acme.test")
        assert "User unknown" in data["reason"]
        [(event_type, step, data)] = await events(d, soft)
        assert (event_type, step, data["kind"], data["status"], data["recipient"]) == (
            "email.bounced", "initial-email", "soft", "4.2.2", "b1@acme.test")  # fmt: skip
        assert await events(d, delivered) == []
        runs = {r: await d.engine.get_run(r) for r in (hard, soft, delivered)}
        assert (runs[hard].status, runs[hard].outcome) == ("completed", "bounced")  # the contact is flagged bounced
        assert runs[soft].status == runs[delivered].status == "waiting"
        again = await d.enrol("b0")  # the bounced address gets nothing more
        assert (await d.engine.get_run(again)).outcome == "bounced" and len(d.mail.received) == sent


async def test_automatic_answers_are_taken_and_ignored(deployment: EngineConfig) -> None:
    async with running(deployment, inbound_mail_secret=SECRET) as d:
        run_id = await d.enrol("a1")
        mid, to = ids(d, run_id)
        common = (f"In-Reply-To: {mid}", f"References: {mid}")
        answers = [
            reply(to, "Re: DEE for Acme", "Message-ID: <ar-1@mail.acme.test>", "Auto-Submitted: auto-replied", *common,
                  body="I am away until Monday.\r\n"),
            reply(to, "Out of Office: DEE for Acme", "Message-ID: <ar-2@mail.acme.test>", *common),
            reply(to, "Re: DEE for Acme", "Message-ID: <ar-3@mail.acme.test>", "X-Autoreply: yes", "Precedence: auto_reply", *common),
        ]  # fmt: skip
        for raw in answers:
            assert await inbound(d, raw) == (200, {"accepted": 0, "ignored": 1})
        payload = {"From": to, "Subject": "Automatic reply: DEE for Acme", "MessageID": "0d4b7c1e-0000-4000-8000-000000000001",
                   "TextBody": "Back soon.", "Headers": [{"Name": "In-Reply-To", "Value": mid},
                                                         {"Name": "Auto-Submitted", "Value": "auto-replied"}]}  # fmt: skip
        assert await inbound(d, json.dumps(payload), "application/json") == (200, {"accepted": 0, "ignored": 1})
        await d.engine.run_until_idle()
        assert await events(d, run_id) == []
        assert (await d.engine.get_run(run_id)).status == "waiting"


async def test_malformed_mail_is_refused_or_ignored_never_a_500_and_the_ingress_stays_up(deployment: EngineConfig) -> None:
    async with running(deployment, inbound_mail_secret=SECRET, max_mail_bytes=3_000_000) as d:
        run_id, readable = await d.enrol("m1"), await d.enrol("m2")
        mid, to = ids(d, run_id)
        multipart = (f"From: {to}\r\nSubject: Re: x\r\nMessage-ID: <t1@mail.acme.test>\r\nMIME-Version: 1.0\r\n"
                     'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
                     "--XYZ\r\nContent-Type: text/plain\r\n\r\nHello").encode()  # fmt: skip
        nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(500))
        hostile: list[tuple[str, bytes, str | None]] = [
            ("garbage bytes", bytes(range(256)) * 64, "message/rfc822"),
            ("NUL and high bytes", b"\x00\xff\xfe\xfd" * 5000, "message/rfc822"),
            ("empty", b"", "message/rfc822"),
            ("only blank lines", b"\r\n\r\n\r\n", "message/rfc822"),
            ("a truncated multipart", multipart, "message/rfc822"),
            ("a truncated multipart naming a look-alike",
             multipart.replace(b"Subject", b"In-Reply-To: <" + b"f" * 33 + b"@dee.local>\r\nSubject"), "message/rfc822"),
            ("a 1 MB header", b"From: " + to.encode() + b"\r\nX-Junk: " + b"a" * 1_048_576 + b"\r\nSubject: hi\r\n\r\nbody\r\n",
             "message/rfc822"),
            ("a 1 MB folded header", b"From: x@acme.test\r\nReferences:" + b"\r\n <x@y>" * 150_000 + b"\r\n\r\nbody\r\n", "message/rfc822"),
            ("a 1 MB subject of encoded words", b"From: x@acme.test\r\nSubject: " + b"=?utf-8?q?=C3=A9?= " * 55_000 + b"\r\n\r\nb\r\n",
             "message/rfc822"),
            ("nesting 500 deep", b"From: x@acme.test\r\nMIME-Version: 1.0\r\n" + nested, "message/rfc822"),
            ("a header line without a colon", b"this is not a header\r\nnor this\r\n\r\nbody", "message/rfc822"),
            ("not JSON", b"{\"From\": ", "application/json"),
            ("a JSON array", b"[1, 2, 3]", "application/json"),
            ("JSON of no provider", b'{"hello": "world"}', "application/json"),
            ("a form of no provider", b"a=1&b=2", "application/x-www-form-urlencoded"),
            ("a form that is not UTF-8", b"headers=%ff%fe&text=x", "application/x-www-form-urlencoded"),
            ("a multipart form without its parts", b"--nothing--\r\n", "multipart/form-data; boundary=nothing"),
            ("a multipart form without a boundary", b"garbage", "multipart/form-data"),
            # built to be slow: the email package's parsers are quadratic or recursive on these
            ("a 1 MB Content-Type of quotes", b"From: x@acme.test\r\nContent-Type: " + b'"' * 1_000_000 + b"\r\n\r\nb\r\n",
             "message/rfc822"),
            ("a 1 MB Content-Type of parameters", b"From: x@acme.test\r\nContent-Type: text/plain" + b";" * 1_000_000 + b"\r\n\r\nb",
             "message/rfc822"),
            ("a 1 MB From of quotes", b'From: "' + b'"' * 1_000_000 + b"\r\n\r\nb\r\n", "message/rfc822"),
            ("100 000 tiny parts",
             b"From: x@acme.test\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n" + b"--q\r\n\r\nx\r\n" * 100_000, "message/rfc822"),
            ("2.5 MB of empty lines", b"From: x@acme.test\r\n\r\n" + b"\n" * 2_500_000, "message/rfc822"),
            ("a form of 100 000 fields", b"--f\r\nContent-Disposition: form-data; name=x\r\n\r\ny\r\n" * 100_000 + b"--f--\r\n",
             "multipart/form-data; boundary=f"),
            ("a form field of 1 MB of parameters", b"--f\r\nContent-Disposition: form-data" + b";" * 1_000_000 + b"\r\n\r\ny\r\n--f--\r\n",
             "multipart/form-data; boundary=f"),
            ("an HTTP Content-Type nested 4000 comments deep", raw_reply(mid, to), "message/rfc822; x=" + "(" * 4000),
            ("an HTTP Content-Type of 8 KB of quotes", b"a=b", "multipart/form-data; boundary=" + '"' * 8000),
        ]  # fmt: skip
        for why, body, content_type in hostile:
            started = time.monotonic()
            status, answer = await inbound(d, body, content_type)
            assert status in (400, 413, 415, 422) or (status, answer) == (200, {"accepted": 0, "ignored": 1}), (why, status, answer)
            assert time.monotonic() - started < 5, why  # the unbounded parse took minutes on some of these
            async with d.http.get(f"{d.base}/healthz") as response:
                assert response.status == 200, why
        # over max_mail_bytes: 413, with and without a Content-Length to go by
        assert (await inbound(d, b"From: x@acme.test\r\n\r\n" + b"x" * 3_000_001))[0] == 413

        async def trickle() -> Any:
            for _ in range(4):
                yield b"x" * 1_000_000

        assert (await inbound(d, trickle()))[0] == 413
        # a truncated multipart that does name the engine's email is read as far as it goes: a reply
        mid2, to2 = ids(d, readable)
        cut = multipart.replace(b"Subject", f"In-Reply-To: {mid2}\r\nSubject".encode()).replace(to.encode(), to2.encode())
        assert await inbound(d, cut) == (200, {"accepted": 1, "ignored": 0})
        await d.engine.run_until_idle()
        assert await events(d, run_id) == []
        assert [t for t, _, _ in await events(d, readable)] == ["email.replied"]


async def test_the_sender_must_authenticate(deployment: EngineConfig) -> None:
    async with running(deployment, inbound_mail_secret=SECRET) as d:
        run_id = await d.enrol("s1")
        mid, to = ids(d, run_id)
        raw = reply(to, "Re: DEE for Acme", "Message-ID: <auth-1@mail.acme.test>", f"In-Reply-To: {mid}")
        for why, auth in (
            ("a wrong password", basic(password=SECRET + "!")), ("another user", basic(user="admin")),
            ("no credentials", {}), ("the password alone", {"Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode()}),
            ("not basic", {"Authorization": f"Bearer {SECRET}"}), ("not base64", {"Authorization": "Basic %%%"}),
        ):  # fmt: skip
            async with d.http.post(f"{d.base}/inbound/email", data=raw, headers={"Content-Type": "message/rfc822", **auth}) as response:
                assert response.status == 401, why
                assert response.headers["WWW-Authenticate"].startswith("Basic "), why
        await d.engine.run_until_idle()
        assert await events(d, run_id) == []
        assert await inbound(d, raw) == (200, {"accepted": 1, "ignored": 0})
    async with running(deployment) as d:  # no secret configured: no route at all
        assert (await inbound(d, raw))[0] == 404
