"""Providers' webhooks over real HTTP: for each provider, correctly signed delivery, bounce (soft
and hard), complaint, open and click callbacks about an email the smtp adapter really sent to
aiosmtpd (its Message-ID read from what aiosmtpd received) become DEE events on that email's run,
with what they mean for it (a hard bounce ends the run and flags the contact, a complaint
suppresses the contact); forged, altered, stale and replayed requests are refused and record
nothing; a callback delivered twice is applied once; unknown routes, oversized and malformed
bodies, and SNS subscription confirmations (never fetched)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dee import EngineConfig
from dee.ingress.app import serve_ingress
from tests.integration.ingress_helpers import Deployment, answer, running
from tests.integration.ingress_signing import (
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    Signer,
    mailgun_body,
    now,
    postmark_headers,
    standard_headers,
)

CLICKED = "https://example.com/pricing"
# what each kind of callback must become: the DEE event type and what its data must hold
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "delivered": ("email.delivered", {}), "soft": ("email.bounced", {"kind": "soft"}), "hard": ("email.bounced", {"kind": "hard"}),
    "complaint": ("email.complained", {}), "open": ("email.opened", {}), "click": ("email.clicked", {"url": CLICKED}),
}  # fmt: skip
Request = tuple[bytes, dict[str, str]]


@dataclass(frozen=True)
class Callback:
    """One thing a provider reports about one email."""

    kind: str
    message_id: str  # the engine's Message-ID, as aiosmtpd received it
    recipient: str
    event_id: str = field(default_factory=lambda: secrets.token_hex(12))


def iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(now() if at is None else at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- each provider's payloads, as its documentation shows them ------------------------------------


def sendgrid_event(c: Callback) -> dict[str, Any]:
    """An Event Webhook event; delivery events carry `smtp-id`, engagement events and spam reports
    only the custom argument every event echoes."""
    event: dict[str, Any] = {"email": c.recipient, "timestamp": now(), "sg_event_id": c.event_id,
                             "sg_message_id": f"sg{c.event_id}.filter0001", "dee_message_id": c.message_id}  # fmt: skip
    delivery = {"smtp-id": c.message_id}
    event |= {
        "delivered": {"event": "delivered", "response": "250 OK", **delivery},
        "soft": {"event": "bounce", "type": "blocked", "reason": "450 4.2.2 mailbox full", "status": "4.2.2", **delivery},
        "hard": {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 user unknown", "status": "5.1.1", **delivery},
        "complaint": {"event": "spamreport"}, "open": {"event": "open", "sg_machine_open": False, "useragent": "Mozilla/5.0"},
        "click": {"event": "click", "url": CLICKED, "useragent": "Mozilla/5.0"},
    }[c.kind]  # fmt: skip
    return event


def mailgun_event(c: Callback) -> dict[str, Any]:
    """`event-data`: the Message-ID bare in `message.headers`, as Mailgun sends it."""
    event: dict[str, Any] = {"id": c.event_id, "timestamp": now() + 0.25, "recipient": c.recipient,
                             "message": {"headers": {"message-id": c.message_id.strip("<>"), "to": c.recipient}}}  # fmt: skip
    event |= {
        "delivered": {"event": "delivered", "delivery-status": {"code": 250, "message": "OK"}},
        "soft": {"event": "failed", "severity": "temporary", "reason": "generic",
                 "delivery-status": {"code": 452, "message": "4.2.2 mailbox full"}},
        "hard": {"event": "failed", "severity": "permanent", "reason": "bounce",
                 "delivery-status": {"code": 550, "description": "5.1.1 user unknown"}},
        "complaint": {"event": "complained"}, "open": {"event": "opened"}, "click": {"event": "clicked", "url": CLICKED},
    }[c.kind]  # fmt: skip
    return event


def ses_record(c: Callback) -> dict[str, Any]:
    """The SES event record (event publishing) that SNS carries as its `Message`."""
    mail = {"timestamp": iso(), "messageId": f"ses-{c.event_id}", "source": "sales@acme.test", "destination": [c.recipient],
            "headers": [{"name": "From", "value": "Acme Sales <sales@acme.test>"}, {"name": "Message-ID", "value": c.message_id}],
            "commonHeaders": {"messageId": f"ses-{c.event_id}", "from": ["sales@acme.test"], "to": [c.recipient]}}  # fmt: skip
    return {
        "delivered": {"eventType": "Delivery", "delivery": {"timestamp": iso(), "recipients": [c.recipient], "smtpResponse": "250 ok"}},
        "soft": {"eventType": "Bounce", "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "timestamp": iso(),
                                                   "bouncedRecipients": [{"emailAddress": c.recipient, "status": "4.2.2"}]}},
        "hard": {"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": iso(),
                                                   "bouncedRecipients": [{"emailAddress": c.recipient, "status": "5.1.1",
                                                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}},
        "complaint": {"eventType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": c.recipient}],
                                                              "complaintFeedbackType": "abuse", "timestamp": iso()}},
        "open": {"eventType": "Open", "open": {"timestamp": iso(), "ipAddress": "192.0.2.1", "userAgent": "Mozilla/5.0"}},
        "click": {"eventType": "Click", "click": {"timestamp": iso(), "link": CLICKED, "ipAddress": "192.0.2.1"}},
    }[c.kind] | {"mail": mail}  # fmt: skip


def postmark_record(c: Callback) -> dict[str, Any]:
    """A Postmark webhook record: no Message-ID, the metadata Postmark echoes on every event."""
    common = {"MessageID": f"pm-{c.event_id}", "MessageStream": "outbound", "Metadata": {"dee_message_id": c.message_id}}
    bounce = {"RecordType": "Bounce", "ID": int(c.event_id, 16), "Email": c.recipient, "BouncedAt": iso(), "Subject": "DEE for Acme"}
    return common | {
        "delivered": {"RecordType": "Delivery", "Recipient": c.recipient, "DeliveredAt": iso(), "Details": "smtp;250 2.0.0 OK"},
        "soft": bounce | {"Type": "SoftBounce", "Description": "The mailbox is full.", "Inactive": False},
        "hard": bounce | {"Type": "HardBounce", "Description": "Unknown user.", "Inactive": True},
        "complaint": bounce | {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Inactive": True},
        "open": {"RecordType": "Open", "Recipient": c.recipient, "ReceivedAt": iso(), "FirstOpen": True},
        "click": {"RecordType": "Click", "Recipient": c.recipient, "ReceivedAt": iso(), "OriginalLink": CLICKED},
    }[c.kind]  # fmt: skip


def standard_event(c: Callback) -> dict[str, Any]:
    data: dict[str, Any] = {"message_id": c.message_id, "recipient": c.recipient}
    data |= {"soft": {"kind": "soft"}, "hard": {"kind": "hard"}, "click": {"url": CLICKED}}.get(c.kind, {})
    return {"type": EXPECTED[c.kind][0], "timestamp": iso(), "data": data}


# --- each provider's requests: signed, and every way of forging one -------------------------------


class Hook:
    """A provider posting callbacks: `requests` are authentic, `forgeries` are not (each with the
    status the ingress must answer and why), and `again` is a callback delivered a second time."""

    name = ""
    refusal = 403

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def requests(self, callbacks: list[Callback]) -> list[Request]:
        return [self.one(c) for c in callbacks]

    def one(self, c: Callback) -> Request:
        raise NotImplementedError

    def again(self, sent: Request, c: Callback) -> Request:
        """The same callback once more, as the provider retries it (the very same request)."""
        return sent

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        raise NotImplementedError


class SendGrid(Hook):
    name = "sendgrid"

    def requests(self, callbacks: list[Callback]) -> list[Request]:  # one body holds a batch of events
        body = json.dumps([sendgrid_event(c) for c in callbacks]).encode() + b"\r\n"
        return [(body, self.signer.sendgrid_headers(body))]

    def one(self, c: Callback) -> Request:
        return self.requests([c])[0]

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        body, headers = self.one(c)
        other = Signer(sendgrid=ec.generate_private_key(ec.SECP256R1()), sns=self.signer.sns)
        stale = json.dumps([sendgrid_event(c)]).encode()
        return [
            ("signed with another key", body, other.sendgrid_headers(body)),
            ("body altered after signing", body.replace(b'"event": "', b'"event": "x'), headers),
            ("timestamp more than 5 minutes old", stale, self.signer.sendgrid_headers(stale, now() - 301)),
            ("no signature", body, {"Content-Type": "application/json"}),
        ]


class Mailgun(Hook):
    name = "mailgun"

    def one(self, c: Callback) -> Request:
        return mailgun_body(mailgun_event(c)), {"Content-Type": "application/json"}

    def again(self, sent: Request, c: Callback) -> Request:
        """Mailgun signs each delivery with a fresh token: the same event, a new signature."""
        event = json.loads(sent[0])["event-data"]
        return mailgun_body(event), sent[1]

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        headers = {"Content-Type": "application/json"}
        body = json.loads(mailgun_body(mailgun_event(c)))
        body["signature"]["token"] = secrets.token_hex(25)  # what is signed is timestamp + token
        return [
            ("signed with another key", mailgun_body(mailgun_event(c), key="not-the-signing-key"), headers),
            ("signed fields altered", json.dumps(body).encode(), headers),
            ("timestamp more than 5 minutes old", mailgun_body(mailgun_event(c), timestamp=now() - 301), headers),
        ]


class Ses(Hook):
    name = "ses"

    def one(self, c: Callback) -> Request:
        document = self.signer.sns_message(message=json.dumps(ses_record(c)), MessageId=c.event_id)
        return json.dumps(document).encode(), {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        headers = {"Content-Type": "text/plain; charset=UTF-8"}
        record = json.dumps(ses_record(c))
        forged = self.signer.sns_message(message=record, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        altered = self.signer.sns_message(message=record)
        altered["Message"] = altered["Message"].replace(c.recipient, "someone@else.test")
        stale = self.signer.sns_message(message=record, at=now() - 301)
        other_topic = self.signer.sns_message(message=record, TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-elses")
        return [(why, json.dumps(doc).encode(), headers) for why, doc in (
            ("signed with a key outside the trust store", forged), ("Message altered after signing", altered),
            ("Timestamp more than 5 minutes old", stale), ("a topic not configured", other_topic),
        )]  # fmt: skip


class Postmark(Hook):
    name = "postmark"
    refusal = 401

    def one(self, c: Callback) -> Request:
        return json.dumps(postmark_record(c)).encode(), postmark_headers()

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        body = json.dumps(postmark_record(c)).encode()
        return [  # Postmark signs nothing: its credentials are all there is to forge
            ("a wrong password", body, postmark_headers(password=POSTMARK_PASSWORD + "x")),
            ("another user", body, postmark_headers(user=POSTMARK_USER + "x")),
            ("no credentials", body, {"Content-Type": "application/json"}),
        ]


class Standard(Hook):
    name = "standard"

    def one(self, c: Callback) -> Request:
        body = json.dumps(standard_event(c)).encode()
        return body, standard_headers(body, f"msg_{c.event_id}")

    def forgeries(self, c: Callback) -> list[tuple[str, bytes, dict[str, str]]]:
        body = json.dumps(standard_event(c)).encode()
        headers = standard_headers(body, f"msg_{c.event_id}")
        other = "whsec_" + "b3RoZXIgc2VjcmV0IG9mIHNvbWUgbGVuZ3Ro"
        return [
            ("signed with another secret", body, standard_headers(body, f"msg_{c.event_id}", secret=other)),
            ("body altered after signing", body.replace(b"email.", b"email.x"), headers),
            ("another webhook-id", body, {**headers, "webhook-id": "msg_other"}),
            ("timestamp more than 5 minutes old", body, standard_headers(body, f"msg_{c.event_id}", now() - 301)),
        ]


HOOKS: dict[str, Callable[[Signer], Hook]] = {"sendgrid": SendGrid, "mailgun": Mailgun, "ses": Ses, "postmark": Postmark,
                                               "standard": Standard}  # fmt: skip


# --- what the deployment recorded -----------------------------------------------------------------


async def post(d: Deployment, provider: str, request: Request, base: str | None = None) -> tuple[int, Any]:
    body, headers = request
    async with d.http.post(f"{base or d.base}/webhooks/{provider}", data=body, headers=headers) as response:
        return await answer(response)


async def timeline(d: Deployment, run_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    return await d.event_log(run_id)


def message_id(d: Deployment, run_id: str) -> str:
    """The email's Message-ID, which the payloads carry where the provider echoes the tag the
    adapter put on the message (SendGrid's unique_args, Postmark's metadata): checked here."""
    mail = d.email_of(run_id)
    found = str(mail["Message-ID"])
    ingress = d.engine.config.ingress  # only the providers configured get their tag
    if ingress.sendgrid_public_key:
        assert json.loads(str(mail["X-SMTPAPI"])) == {"unique_args": {"dee_message_id": found}}
    else:
        assert "X-SMTPAPI" not in mail
    assert mail["X-PM-Metadata-dee_message_id"] == (found if ingress.postmark_username else None)
    return found


def recipient(d: Deployment, run_id: str) -> str:
    return str(d.email_of(run_id)["To"])


@asynccontextmanager
async def another_ingress(d: Deployment) -> AsyncIterator[str]:
    """A second ingress process's worth of state (its own delivered-event memory) on the same engine."""
    backend = d.engine._backend  # type: ignore[attr-defined]
    served = await serve_ingress(d.engine, backend.config, backend.metrics, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{served.port}"
    finally:
        await served.close()


@asynccontextmanager
async def deployed(config: EngineConfig, directory: Path, **ingress: Any) -> AsyncIterator[tuple[Deployment, Signer]]:
    signer = Signer()
    async with running(config, **(signer.ingress_config(directory) | ingress)) as d:
        yield d, signer


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(HOOKS))
async def test_signed_callbacks_become_events_on_the_runs_of_the_emails(deployment: EngineConfig, tmp_path: Path,
                                                                        provider: str) -> None:  # fmt: skip
    async with deployed(deployment, tmp_path) as (d, signer):
        hook = HOOKS[provider](signer)
        engaged, bounced, complained, untouched = [await d.enrol(f"{provider}-{i}") for i in range(4)]
        sent_before = len(d.mail.received)
        callbacks = [Callback(kind, message_id(d, engaged), recipient(d, engaged)) for kind in ("delivered", "soft", "open", "click")]
        callbacks += [Callback("hard", message_id(d, bounced), recipient(d, bounced)),
                      Callback("complaint", message_id(d, complained), recipient(d, complained))]  # fmt: skip
        requests = hook.requests(callbacks)
        answers = [await post(d, provider, request) for request in requests]
        assert all(status == 200 for status, _ in answers), answers
        assert sum(answer["accepted"] for _, answer in answers) == len(callbacks), answers
        await d.engine.run_until_idle()

        # every callback is its event on its email's run, matched to the step that sent the email
        def expected(kinds: list[str]) -> list[tuple[str, str]]:
            return sorted((EXPECTED[k][0], "initial-email") for k in kinds)

        recorded = {run: await timeline(d, run) for run in (engaged, bounced, complained, untouched)}
        assert sorted((t, s) for t, s, _ in recorded[engaged]) == expected(["delivered", "soft", "open", "click"])
        assert sorted((t, s) for t, s, _ in recorded[bounced]) == expected(["hard"])
        assert sorted((t, s) for t, s, _ in recorded[complained]) == expected(["complaint"])
        assert recorded[untouched] == []
        for run, kinds in ((engaged, ("delivered", "soft", "open", "click")), (bounced, ("hard",)), (complained, ("complaint",))):
            for kind in kinds:
                event_type, wanted = EXPECTED[kind]
                [data] = [data for t, _, data in recorded[run] if t == event_type]
                assert {k: data.get(k) for k in wanted} == wanted and data["provider"] == provider, (kind, data)
                assert data.get("recipient") == recipient(d, run), (kind, data)

        # what they mean: a soft bounce, an open and a click leave the run waiting; a hard bounce
        # ends it and flags the contact; a complaint suppresses the contact and cancels the run
        runs = {run: await d.engine.get_run(run) for run in (engaged, bounced, complained, untouched)}
        assert (runs[engaged].status, runs[engaged].current_step) == ("waiting", "wait-1")
        assert (runs[bounced].status, runs[bounced].outcome) == ("completed", "bounced")
        assert runs[complained].status == "cancelled"
        assert runs[untouched].status == "waiting"
        report = await d.engine.compliance.report(0, await d.engine.now_tick())
        assert [(s.contact_id, s.reason) for s in report.suppressions] == [(f"{provider}-2", "complaint")]
        again = await d.enrol(f"{provider}-1")  # the bounced address: a new run of the contact sends nothing
        assert (await d.engine.get_run(again)).outcome == "bounced" and len(d.mail.received) == sent_before

        # each callback delivered once more (a provider's retry) is applied once: to this ingress,
        # which remembers what it delivered, and to another process, which does not
        async with another_ingress(d) as base:
            for target in (d.base, base):
                for request, callback in zip(requests, callbacks, strict=False):
                    status, answer = await post(d, provider, hook.again(request, callback), base=target)
                    assert status == 200 and answer["ignored"] == 0, answer
        await d.engine.run_until_idle()
        assert {run: await timeline(d, run) for run in recorded} == recorded

        # mail the engine did not send, or a run it does not know: taken (2xx) and ignored
        for foreign in ("<20240514.1234@mail.someone-else.example>", f"<{'0' * 32}.01NOSUCHRUN000000000000000@dee.local>"):
            status, answer = await post(d, provider, hook.one(Callback("delivered", foreign, "x@acme.test")))
            assert (status, answer) == (200, {"accepted": 0, "ignored": 1})

        # and the plan acts on them: the open makes the follow-up the warm one
        await d.engine.advance_clock(3 * 86_400)
        assert [(await d.engine.get_run(run)).current_step for run in (engaged, untouched)] == ["wait-2", "wait-3"]


@pytest.mark.parametrize("provider", list(HOOKS))
async def test_forged_altered_stale_and_replayed_callbacks_are_refused_and_record_nothing(
    deployment: EngineConfig, tmp_path: Path, provider: str
) -> None:
    async with deployed(deployment, tmp_path) as (d, signer):
        hook = HOOKS[provider](signer)
        run_id = await d.enrol(f"{provider}-x")
        for kind in ("hard", "complaint", "click"):  # the callbacks that would do the most harm
            for why, body, headers in hook.forgeries(Callback(kind, message_id(d, run_id), recipient(d, run_id))):
                status, answer = await post(d, provider, (body, headers))
                assert status == hook.refusal, (kind, why, status, answer)
        if provider == "mailgun":
            # a captured request played again, as is or with other event-data (which Mailgun does
            # not sign): its token is spent
            genuine = hook.one(Callback("open", message_id(d, run_id), recipient(d, run_id)))
            assert (await post(d, provider, genuine))[0] == 200
            document = json.loads(genuine[0])
            document["event-data"] |= {"event": "failed", "severity": "permanent", "id": "another-event"}
            for replayed in (genuine[0], json.dumps(document).encode()):
                status, answer = await post(d, provider, (replayed, genuine[1]))
                assert (status, answer) == (403, "token already used\n")
        await d.engine.run_until_idle()
        expected = [("email.opened", "initial-email")] if provider == "mailgun" else []
        assert [(t, s) for t, s, _ in await timeline(d, run_id)] == expected
        run = await d.engine.get_run(run_id)
        assert (run.status, run.current_step) == ("waiting", "wait-1")
        report = await d.engine.compliance.report(0, await d.engine.now_tick())
        assert report.suppressions == []


async def test_unknown_and_unconfigured_providers_have_no_route(deployment: EngineConfig, tmp_path: Path) -> None:
    signer = Signer()
    only_sendgrid = {"sendgrid_public_key": signer.ingress_config(tmp_path)["sendgrid_public_key"]}
    async with running(deployment, **only_sendgrid) as d:
        run_id = await d.enrol("c1")
        callback = Callback("hard", message_id(d, run_id), recipient(d, run_id))
        signed = {name: HOOKS[name](signer).one(callback) for name in HOOKS}
        for provider in ("mailgun", "ses", "postmark", "standard"):  # signed right, but not configured here
            assert (await post(d, provider, signed[provider]))[0] == 404, provider
        for provider in ("sparkpost", "SendGrid", "sendgrid.json", "..", "%00"):
            assert (await post(d, provider, signed["sendgrid"]))[0] == 404, provider
        async with d.http.get(f"{d.base}/webhooks/sendgrid") as response:
            assert response.status == 405
        assert (await post(d, "sendgrid", signed["sendgrid"]))[0] == 200  # the configured one answers
        await d.engine.run_until_idle()
        assert [t for t, _, _ in await timeline(d, run_id)] == ["email.bounced"]


async def test_oversized_and_malformed_bodies_are_refused_and_the_ingress_stays_up(deployment: EngineConfig, tmp_path: Path) -> None:
    async with deployed(deployment, tmp_path, max_body_bytes=20_000) as (d, signer):
        run_id = await d.enrol("c1")
        callback = Callback("hard", message_id(d, run_id), recipient(d, run_id))
        # an oversized body, however well signed: 413 before it is read through
        huge = json.dumps([sendgrid_event(callback) | {"padding": "x" * 30_000}]).encode()
        assert (await post(d, "sendgrid", (huge, signer.sendgrid_headers(huge))))[0] == 413
        async with d.http.post(f"{d.base}/webhooks/sendgrid", data=_chunks(huge), headers=signer.sendgrid_headers(huge)) as response:
            assert response.status == 413  # no Content-Length to refuse it by: refused as it streams in
        # not JSON: 400, whether the signature covers the body or is in it
        for garbage in (b"{not json", b"\xff\xfe\x00", b"", b'{"a": 1', b"[1, 2"):
            sendgrid = await post(d, "sendgrid", (garbage, signer.sendgrid_headers(garbage)))
            standard = await post(d, "standard", (garbage, standard_headers(garbage, "msg_garbage")))
            postmark = await post(d, "postmark", (garbage, postmark_headers()))
            mailgun = await post(d, "mailgun", (garbage, {"Content-Type": "application/json"}))
            ses = await post(d, "ses", (garbage, {"Content-Type": "text/plain"}))
            answers = {"sendgrid": sendgrid, "standard": standard, "postmark": postmark, "mailgun": mailgun, "ses": ses}
            assert {name: status for name, (status, _) in answers.items()} == dict.fromkeys(answers, 400), (garbage, answers)
        # JSON, signed, but not what the provider sends: 400
        for provider, request in (
            ("sendgrid", (b'{"event": "bounce"}', signer.sendgrid_headers(b'{"event": "bounce"}'))),
            ("standard", (b'{"type": "email.exploded"}', standard_headers(b'{"type": "email.exploded"}', "msg_shape"))),
            ("postmark", (b'{"RecordType": "Bounce", "Type": "HardBounce"}', postmark_headers())),
            ("mailgun", (mailgun_body({"event": "failed", "recipient": "a@acme.test"}), {})),  # no id
            ("ses", (json.dumps(signer.sns_message(message="not the SES record")).encode(), {})),
        ):  # fmt: skip
            assert (await post(d, provider, request))[0] == 400, provider
        # JSON without the signature it should hold: not authentic
        for provider in ("mailgun", "ses"):
            assert (await post(d, provider, (b'{"event-data": {"event": "failed"}}', {})))[0] == 403, provider
        async with d.http.get(f"{d.base}/healthz") as response:
            assert response.status == 200
        await d.engine.run_until_idle()
        assert await timeline(d, run_id) == []


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


async def test_an_sns_subscription_confirmation_is_never_fetched(deployment: EngineConfig, tmp_path: Path) -> None:
    visits: list[str] = []

    async def visited(request: web.Request) -> web.Response:
        visits.append(request.path_qs)
        return web.Response(text="confirmed")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", visited)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    local = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/confirm?Token=1"  # type: ignore[union-attr]
    try:
        async with deployed(deployment, tmp_path) as (d, signer):
            run_id = await d.enrol("c1")
            genuine = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f37f"
            for url, answer in ((genuine, {"accepted": 0, "ignored": 0, "subscription": "awaiting confirmation"}),
                                (local, {"accepted": 0, "ignored": 0})):  # fmt: skip
                document = signer.sns_message("SubscriptionConfirmation", message="You have chosen to subscribe", SubscribeURL=url)
                assert await post(d, "ses", (json.dumps(document).encode(), {"x-amz-sns-message-type": "SubscriptionConfirmation"})) == (
                    200, answer)  # fmt: skip
            # one whose SubscribeURL was changed after signing is a forgery
            document = signer.sns_message("SubscriptionConfirmation", message="subscribe", SubscribeURL=genuine)
            document["SubscribeURL"] = local
            assert (await post(d, "ses", (json.dumps(document).encode(), {})))[0] == 403
            unsubscribed = signer.sns_message("UnsubscribeConfirmation", message="unsubscribed", SubscribeURL=local)
            assert await post(d, "ses", (json.dumps(unsubscribed).encode(), {})) == (200, {"accepted": 0, "ignored": 0})
            await d.engine.run_until_idle()
            assert await timeline(d, run_id) == []
    finally:
        await runner.cleanup()
    assert visits == []
