"""Inbound mail classification (`dee.ingress.mail`): replies, bounces and automatic answers to the
engine's Message-IDs, from raw MIME and from providers' inbound-parse payloads, and hostile input
that is read sensibly or refused with `MailError`, never anything else."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dee.ingress.mail import InboundMail, MailError, MailLimits, parse_inbound, parse_inbound_json

DATA = Path(__file__).parent / "data" / "mail"
DOMAIN = "dee.local"
A = "<0123456789abcdef0123456789abcdef@dee.local>"
B = "<fedcba9876543210fedcba9876543210@dee.local>"
C = "<aaaabbbbccccddddeeeeffff00001111@dee.local>"
ENGINE_ID = re.compile(r"<[0-9a-f]{32}(\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63})?@dee\.local>")
SAMPLES = sorted(p.name for p in DATA.glob("*.eml"))


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def mail(*headers: str, body: str = "Hello.\n", content_type: str = "text/plain; charset=utf-8") -> bytes:
    lines = [*headers, "MIME-Version: 1.0", f"Content-Type: {content_type}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def reply(*headers: str, **kwargs: Any) -> bytes:
    return mail("From: Jane <jane@example.com>", "Message-ID: <r1@example.com>", *headers, **kwargs)


def assert_clean(result: InboundMail | None) -> None:
    """What every answer promises the ingress: single bounded lines, the engine's id form, JSON-safe."""
    if result is None:
        return
    assert ENGINE_ID.fullmatch(result.message_id)
    assert result.kind in ("reply", "bounce", "auto_reply")
    for value in msgspec.structs.asdict(result).values():
        if isinstance(value, str):
            assert not re.search(r"[\x00-\x1f\x7f]", value) and len(value) <= 1000
    assert result.received_message_id.startswith("<") or re.fullmatch(r"sha256:[0-9a-f]{64}", result.received_message_id)
    msgspec.json.encode(result)  # no lone surrogates or other unencodable text


# -- replies ---------------------------------------------------------------------------------------


def test_a_gmail_reply_refers_to_the_message_in_in_reply_to() -> None:
    result = parse_inbound(load("gmail_reply.eml"), DOMAIN)
    assert result == InboundMail(
        kind="reply", message_id=A, received_message_id="<CAF7xK2pQ=y8vTnM3sd+Hk1Qw9ZbUe5r0c_7Lg@mail.gmail.com>",
        sender="jane.doe@gmail.com", subject="Re: Your demo is ready", occurred_at="2024-05-14T16:12:29+00:00",
    )


def test_a_reply_to_someone_else_finds_our_newest_id_in_references() -> None:
    # In-Reply-To names Carol's message; References holds two of ours, the newer one last
    result = parse_inbound(load("reply_via_references.eml"), DOMAIN)
    assert result is not None and result.kind == "reply" and result.message_id == B
    assert result.sender == "bob@example.org"


def test_a_reply_to_a_message_that_is_not_ours_is_nothing() -> None:
    # its References hold look-alikes: a longer domain, another domain, 33 hex characters
    assert parse_inbound(load("reply_not_ours.eml"), DOMAIN) is None


def test_in_reply_to_is_preferred_to_references() -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", f"References: {C} {B}"), DOMAIN)
    assert result is not None and result.message_id == A


def test_ids_match_without_regard_to_case_and_come_back_in_the_engine_form() -> None:
    shouted = "<0123456789ABCDEF0123456789ABCDEF@DEE.LOCAL>"
    result = parse_inbound(reply(f"In-Reply-To: {shouted}"), DOMAIN)
    assert result is not None and result.message_id == A


def test_an_id_that_names_its_run_is_ours_too() -> None:
    named = "<0123456789ABCDEF0123456789abcdef.01HY7Q3Z_run-1.a@dee.local>"
    result = parse_inbound(reply(f"In-Reply-To: {named}"), DOMAIN)
    assert result is not None and result.message_id == "<0123456789abcdef0123456789abcdef.01HY7Q3Z_run-1.a@dee.local>"
    assert parse_inbound(reply("In-Reply-To: <0123456789abcdef0123456789abcdef.@dee.local>"), DOMAIN) is None
    bounce = parse_inbound(load("mailer_daemon_plain.eml").replace(A.encode(), named.encode()), DOMAIN)
    assert bounce is not None and bounce.kind == "bounce" and bounce.message_id == result.message_id


def test_only_the_configured_domain_counts() -> None:
    raw = reply(f"In-Reply-To: {A}")
    assert parse_inbound(raw, "mail.acme.test") is None
    result = parse_inbound(reply("In-Reply-To: <0123456789abcdef0123456789abcdef@mail.acme.test>"), "mail.acme.test")
    assert result is not None and result.message_id == "<0123456789abcdef0123456789abcdef@mail.acme.test>"


def test_a_domain_that_is_not_a_host_name_is_a_configuration_error() -> None:
    with pytest.raises(ValueError) as caught:
        parse_inbound(reply(f"In-Reply-To: {A}"), "dee local")
    assert not isinstance(caught.value, MailError)


def test_raw_utf8_and_encoded_words_in_the_subject_are_decoded() -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", "Subject: Re: Grüße =?utf-8?q?aus_K=C3=B6ln?="), DOMAIN)
    assert result is not None and result.subject == "Re: Grüße aus Köln"


# -- automatic answers -----------------------------------------------------------------------------


def test_an_out_of_office_is_an_automatic_reply_not_a_reply() -> None:
    result = parse_inbound(load("out_of_office.eml"), DOMAIN)
    assert result is not None and result.kind == "auto_reply" and result.message_id == A
    assert result.sender == "erik.svensson@example.se" and result.subject == "Automatic reply: Your demo is ready"


@pytest.mark.parametrize("marker", [
    "Auto-Submitted: auto-replied", "Auto-Submitted: auto-generated (vacation)", "Auto-Submitted: auto-notified",
    "X-Autoreply: yes", "X-Autorespond: Out of office", "Precedence: bulk", "Precedence: junk", "Precedence: auto_reply",
    "Subject: Out of Office: Your demo is ready", "Subject: Automatic reply: Your demo is ready", "Subject: AutoReply: hi",
    "Subject: Auto: Your demo is ready", "Subject: Abwesenheitsnotiz: Ihre Demo", "Subject: John Smith is out of the office.",
    "Subject: =?utf-8?q?R=C3=A9ponse_automatique_:_Votre_d=C3=A9mo?=",
])  # fmt: skip
def test_automatic_answers_are_recognised(marker: str) -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", marker), DOMAIN)
    assert result is not None and result.kind == "auto_reply" and result.message_id == A


@pytest.mark.parametrize("header", [
    "Auto-Submitted: no", "Precedence: list", "X-Autoreply: no", "Subject: Re: are you out of office next week?",
    "Subject: Re: automatic replies are annoying",
])  # fmt: skip
def test_a_person_answering_is_still_a_reply(header: str) -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", header), DOMAIN)
    assert result is not None and result.kind == "reply"


def test_an_automatic_answer_to_someone_else_is_nothing() -> None:
    assert parse_inbound(reply("In-Reply-To: <x@example.com>", "Auto-Submitted: auto-replied"), DOMAIN) is None


def test_a_read_receipt_is_automatic_and_names_its_original() -> None:
    raw = mail(
        "From: jane@example.com", "Subject: Read: Your demo is ready",
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="R"', body=(
            "--R\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n"
            "--R\r\nContent-Type: message/disposition-notification\r\n\r\n"
            f"Reporting-UA: mail.example.com; Outlook\r\nOriginal-Message-ID: {B}\r\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--R--\r\n"
        ), content_type='multipart/report; report-type=disposition-notification; boundary="R"',
    )  # fmt: skip
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.kind == "auto_reply" and result.message_id == B


# -- bounces ---------------------------------------------------------------------------------------


def test_a_postfix_hard_bounce() -> None:
    # it says Auto-Submitted: auto-replied, as Postfix bounces do: a bounce is recognised first
    result = parse_inbound(load("postfix_hard_bounce.eml"), DOMAIN)
    assert result == InboundMail(
        kind="bounce", message_id=A, received_message_id="<20240514160003.4VfM9Q0b2Zz4wGx@mail.example.com>",
        sender="MAILER-DAEMON@mail.example.com", subject="Undelivered Mail Returned to Sender",
        occurred_at="2024-05-14T16:00:03+00:00", bounce_kind="hard", status="5.1.1",
        diagnostic="smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        recipient="nobody@example.org",
    )


def test_a_delayed_mailbox_full_is_a_soft_bounce() -> None:
    result = parse_inbound(load("soft_bounce_delayed.eml"), DOMAIN)
    assert result is not None and result.kind == "bounce" and result.message_id == C
    assert (result.bounce_kind, result.status, result.recipient) == ("soft", "4.2.2", "full@example.org")
    assert result.diagnostic == "smtp; 452 4.2.2 <full@example.org>: Mailbox full"


def test_an_exchange_dsn() -> None:
    result = parse_inbound(load("exchange_dsn.eml"), DOMAIN)
    assert result is not None and result.kind == "bounce" and result.message_id == C
    assert (result.bounce_kind, result.status, result.recipient) == ("hard", "5.1.10", "ghost@contoso.com")
    assert result.diagnostic is not None and result.diagnostic.startswith("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound")
    assert result.sender == "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com"


def test_a_plain_text_bounce_from_mailer_daemon() -> None:
    # the copy of our message says "version 4.2.1": the first status quoted is the one that counts
    result = parse_inbound(load("mailer_daemon_plain.eml"), DOMAIN)
    assert result is not None and result.kind == "bounce" and result.message_id == A
    assert (result.bounce_kind, result.status, result.recipient) == ("hard", "5.1.1", "nosuchuser@example.info")
    assert result.diagnostic == "Remote host said: 550 5.1.1 <nosuchuser@example.info>: Recipient address rejected: User unknown"
    assert result.received_message_id == "sha256:" + hashlib.sha256(load("mailer_daemon_plain.eml")).hexdigest()


def test_one_hard_recipient_makes_a_dsn_hard_whatever_the_order() -> None:
    raw = load("dsn_two_recipients.eml")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.message_id == B  # the returned message beats the envelope id
    assert (result.bounce_kind, result.status, result.recipient) == ("hard", "5.1.1", "gone@example.net")
    text = raw.decode()
    first, second = (text.index("Final-Recipient: RFC822; later"), text.index("Final-Recipient: RFC822; gone"))
    end = text.index("\n--44HEj0ab012345", second)
    swapped = text[:first] + text[second:end] + "\n" + text[first:second].rstrip("\n") + "\n" + text[end:]
    again = parse_inbound(swapped.encode(), DOMAIN)
    assert again is not None and (again.bounce_kind, again.recipient) == ("hard", "gone@example.net")


def test_without_a_returned_message_the_envelope_id_names_the_original() -> None:
    text = load("dsn_two_recipients.eml").decode()
    cut = text[: text.index("--44HEj0ab012345.1715957100/relay.example.net\nContent-Type: message/rfc822")]
    result = parse_inbound((cut + "--44HEj0ab012345.1715957100/relay.example.net--\n").encode(), DOMAIN)
    assert result is not None and result.kind == "bounce" and result.message_id == A  # xtext "+40" is "@"


def dsn(*recipients: str, extra: str = "", returned: str | None = A) -> bytes:
    blocks = "\r\n".join(recipients)
    returned_part = f"--D\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {returned}\r\n\r\n" if returned else ""
    body = (
        "--D\r\nContent-Type: text/plain\r\n\r\nDelivery report.\r\n"
        f"--D\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n{blocks}\r\n"
        f"{returned_part}--D--\r\n"
    )
    return mail("From: Mail Delivery System <MAILER-DAEMON@mx.example.com>", extra or "Subject: Delivery report",
                body=body, content_type='multipart/report; report-type=delivery-status; boundary="D"')


def test_failed_with_a_temporary_status_is_soft() -> None:
    result = parse_inbound(dsn("Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 4.4.7\r\n"), DOMAIN)
    assert result is not None and (result.bounce_kind, result.status) == ("soft", "4.4.7")


def test_failed_without_a_status_takes_it_from_the_diagnostic_code() -> None:
    block = "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp; 554 5.7.1 Rejected as spam\r\n"
    result = parse_inbound(dsn(block), DOMAIN)
    assert result is not None and (result.bounce_kind, result.status) == ("hard", "5.7.1")


def test_a_dsn_reporting_delivery_only_is_nothing() -> None:
    block = "Final-Recipient: rfc822; a@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
    assert parse_inbound(dsn(block), DOMAIN) is None


def test_a_dsn_for_a_message_that_is_not_ours_is_nothing() -> None:
    block = "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    assert parse_inbound(dsn(block, returned="<someone@example.com>"), DOMAIN) is None


def test_a_bounce_header_naming_the_original_is_a_fallback() -> None:
    block = "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    raw = dsn(block, extra=f"X-Original-Message-ID: {C}", returned=None)
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.message_id == C and result.bounce_kind == "hard"


def test_a_plain_text_bounce_with_a_temporary_status_is_soft() -> None:
    raw = mail("From: Mail Delivery System <postmaster@mx.example.com>", "Subject: Delivery delayed",
               body=f"<full@example.org>: host mx.example.org said: 452-4.2.2 The mailbox is full\n\nMessage-ID: {C}\n")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and (result.bounce_kind, result.status, result.recipient) == ("soft", "4.2.2", "full@example.org")
    assert result.message_id == C and result.diagnostic == "<full@example.org>: host mx.example.org said: 452-4.2.2 The mailbox is full"


def test_a_mailer_daemon_notice_without_a_status_is_soft() -> None:
    raw = mail("From: MAILER-DAEMON@mx.example.com", "Subject: Warning: message delayed",
               body=f"Your message is delayed and will be retried.\n\nMessage-ID: {A}\n")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and (result.kind, result.bounce_kind, result.status) == ("bounce", "soft", None)


def test_a_bare_smtp_reply_code_stands_for_its_class() -> None:
    raw = mail("From: postmaster@mx.example.com", "Subject: Mail delivery failed",
               body=f"  a@example.org\n    host mx.example.org [192.0.2.1]: 550 Unrouteable address\n\n> Message-ID: {B}\n")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and (result.bounce_kind, result.status, result.message_id) == ("hard", "5.0.0", B)


# -- malformed and hostile input -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [bytes(range(256)) * 4, b"\x00\xff\xfe\xfd" * 100, b"   \r\n\r\n  ", b""])
def test_bytes_that_are_not_a_message_are_refused(raw: bytes) -> None:
    with pytest.raises(MailError):
        parse_inbound(raw, DOMAIN)


def test_a_message_missing_its_headers_still_parses() -> None:
    raw = f"In-Reply-To: {A}\r\n\r\nSounds good.\r\n".encode()
    result = parse_inbound(raw, DOMAIN)
    assert result == InboundMail(kind="reply", message_id=A, received_message_id="sha256:" + hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize(("date", "expected"), [
    ("Tue, 14 May 2024 18:12:29 +0200", "2024-05-14T16:12:29+00:00"),
    ("14 May 2024 18:12:29 -0000", "2024-05-14T18:12:29+00:00"),
    ("Fri, 1 Aug 2014 16:45:32 -04:00", "2014-08-01T20:45:32+00:00"),
    ("Tue, 14 May 2024 18:12:29 +9999", None), ("not a date", None), ("Tue, 99 Foo 2024", None),
])  # fmt: skip
def test_the_date_is_utc_iso_8601_when_it_can_be_read(date: str, expected: str | None) -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", f"Date: {date}"), DOMAIN)
    assert result is not None and result.occurred_at == expected


def test_a_truncated_multipart_still_gives_its_reply() -> None:
    raw = load("gmail_reply.eml")
    result = parse_inbound(raw[: raw.index(b"Content-Type: text/html") + 30], DOMAIN)
    assert result is not None and result.kind == "reply" and result.message_id == A


def test_a_truncated_dsn_still_gives_its_bounce() -> None:
    raw = load("postfix_hard_bounce.eml")
    result = parse_inbound(raw[: raw.index(b"List-Unsubscribe:")], DOMAIN)
    assert result is not None and (result.kind, result.message_id, result.bounce_kind) == ("bounce", A, "hard")


def test_a_multipart_without_its_boundary_still_parses() -> None:
    raw = reply(f"In-Reply-To: {A}", body="--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n", content_type="multipart/mixed")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.kind == "reply"


def test_a_message_over_the_size_limit_is_refused_before_parsing() -> None:
    raw = reply(f"In-Reply-To: {A}", body="x" * (10 * 1024 * 1024))
    started = time.perf_counter()
    with pytest.raises(MailError, match="over the 10485760-byte limit"):
        parse_inbound(raw, DOMAIN)
    assert time.perf_counter() - started < 0.5
    small = reply(f"In-Reply-To: {A}")
    with pytest.raises(MailError):
        parse_inbound(small, DOMAIN, limits=MailLimits(max_bytes=len(small) - 1))
    assert parse_inbound(small, DOMAIN, limits=MailLimits(max_bytes=len(small))) is not None


def nested(levels: int, kind: str = "multipart/mixed") -> bytes:
    head = "".join(
        f"Content-Type: {kind}; boundary=b{i}\r\n\r\n--b{i}\r\n" if kind.startswith("multipart") else f"Content-Type: {kind}\r\n\r\n"
        for i in range(levels)
    )
    tail = "".join(f"\r\n--b{i}--" for i in reversed(range(levels))) if kind.startswith("multipart") else ""
    return f"From: a@example.com\r\nIn-Reply-To: {A}\r\n{head}Content-Type: text/plain\r\n\r\nhi{tail}\r\n".encode()


def test_moderately_nested_multiparts_parse() -> None:
    result = parse_inbound(nested(8), DOMAIN)
    assert result is not None and result.kind == "reply"


@pytest.mark.parametrize(("levels", "kind", "reason"), [
    (40, "multipart/mixed", "MIME parts nested deeper than 16"), (5000, "multipart/mixed", "declares 5000 MIME containers"),
    (5000, "message/rfc822", "declares 5000 MIME containers"),
])  # fmt: skip
def test_deeply_nested_mime_is_refused_quickly(levels: int, kind: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(MailError, match=reason):
        parse_inbound(nested(levels, kind), DOMAIN)
    assert time.perf_counter() - started < 2


def test_nesting_hidden_behind_a_comment_is_still_counted() -> None:
    raw = nested(5000).replace(b"Content-Type: multipart", b"Content-Type: (x)\r\n multipart")
    with pytest.raises(MailError, match="MIME containers"):
        parse_inbound(raw, DOMAIN)


def test_deeply_nested_comments_in_a_structured_header_are_refused_or_survived() -> None:
    with pytest.raises(MailError):
        parse_inbound(reply(f"In-Reply-To: {A}", content_type="text/plain; charset=" + "(" * 5000), DOMAIN)
    result = parse_inbound(mail("From: " + "(" * 5000 + "jane@example.com", f"In-Reply-To: {A}"), DOMAIN)
    assert result is not None and result.kind == "reply"


def test_too_many_header_fields_are_refused() -> None:
    raw = reply(f"In-Reply-To: {A}", *(f"X-Filler-{i}: {i}" for i in range(1200)))
    with pytest.raises(MailError, match="header fields"):
        parse_inbound(raw, DOMAIN)
    assert parse_inbound(raw, DOMAIN, limits=MailLimits(max_headers=2000)) is not None


def test_too_many_mime_parts_are_refused() -> None:
    parts = "".join("--P\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(300))
    with pytest.raises(MailError, match="MIME parts"):
        parse_inbound(reply(f"In-Reply-To: {A}", body=parts + "--P--\r\n", content_type="multipart/mixed; boundary=P"), DOMAIN)


def test_cr_lf_injected_through_encoded_words_stays_on_one_line() -> None:
    raw = mail(
        "From: =?utf-8?q?Eve=0D=0ABcc:_victim@example.org?= <eve@example.com>",
        "Subject: =?utf-8?q?Re:_hi=0D=0AX-Autoreply:_yes=0D=0A=0D=0Abody?=",
        "Message-ID: <inj@example.com> =?utf-8?q?=0D=0ABcc:_x?=", f"In-Reply-To: {A}",
    )
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.kind == "reply"  # the decoded "X-Autoreply" is text, not a field
    assert result.sender == "eve@example.com" and result.subject == "Re: hi X-Autoreply: yes body"
    assert result.received_message_id == "<inj@example.com>"
    assert_clean(result)


def test_control_and_bidi_characters_never_reach_the_result() -> None:
    result = parse_inbound(reply(f"In-Reply-To: {A}", "Subject: =?utf-8?q?a=00b=1Bc=E2=80=AEd=C2=85e?="), DOMAIN)
    assert result is not None and result.subject == "a b c d e"


def test_undecodable_charsets_are_read_with_replacement() -> None:
    raw = reply(f"In-Reply-To: {A}", "Subject: =?x-no-such-charset?q?Hall=F6?= =?utf-8?b?!!!?=",
                body="Gr\xfc\xdfe", content_type="text/plain; charset=x-no-such-charset")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.kind == "reply" and result.subject is not None
    assert result.subject.startswith("Hall") and "=F6" not in result.subject
    assert_clean(result)


def test_a_plain_text_bounce_in_a_bogus_charset_and_broken_base64_is_still_read() -> None:
    text = base64.b64encode(f"Remote host said: 550 5.1.1 <x@example.org>: no such user\nMessage-ID: {B}\n".encode()).decode()
    raw = mail("From: MAILER-DAEMON@mx.example.com", "Subject: failure notice", "Content-Transfer-Encoding: base64",
               body=text + "\r\n!!!=\r\n", content_type="text/plain; charset=rot13")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and (result.kind, result.status, result.message_id) == ("bounce", "5.1.1", B)


def test_invalid_utf8_in_raw_headers_becomes_replacement_characters() -> None:
    raw = reply(f"In-Reply-To: {A}").replace(b"Message-ID", b"Subject: Re: \xff\xfe caf\xc3\r\nMessage-ID")
    result = parse_inbound(raw, DOMAIN)
    assert result is not None and result.subject == "Re: \ufffd\ufffd caf\ufffd"
    assert_clean(result)


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_survives_truncation_anywhere(name: str) -> None:
    raw = load(name)
    for end in range(0, len(raw), max(1, len(raw) // 97)):
        try:
            assert_clean(parse_inbound(raw[:end], DOMAIN))
        except MailError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_an_answer_or_mail_error(raw: bytes) -> None:
    try:
        assert_clean(parse_inbound(raw, DOMAIN))
    except MailError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=8)), max_size=6))
def test_mutated_samples_give_an_answer_or_mail_error(name: str, edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(load(name))
    for position, replacement in edits:
        at = position % (len(raw) + 1)
        raw[at : at + len(replacement)] = replacement
    try:
        assert_clean(parse_inbound(bytes(raw), DOMAIN))
    except MailError:
        pass


# -- provider payloads -----------------------------------------------------------------------------


def test_sendgrid_inbound_parse_without_raw() -> None:
    payload = {
        "headers": (
            "Received: by mx0047p1mdw1.sendgrid.net with SMTP id 6WCVv7KAWn Wed, 15 May 2024 08:01:12 +0000 (UTC)\n"
            "From: Bob Martin <bob@example.org>\nTo: sales@example.com\nSubject: Re: Your demo is ready\n"
            f"Date: Wed, 15 May 2024 10:01:05 +0200\nMessage-ID: <sg1@example.org>\nIn-Reply-To: <other@example.org>\n"
            f"References: {A}\n {B}\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"zz\"\n"
        ),
        "from": "Bob Martin <bob@example.org>", "subject": "Re: Your demo is ready", "text": "Yes please.\n\n> quoted",
        "to": "sales@example.com", "envelope": '{"to":["sales@example.com"],"from":"bob@example.org"}', "SPF": "pass",
        "charsets": '{"to":"UTF-8","subject":"UTF-8","from":"UTF-8","text":"UTF-8"}',
    }  # fmt: skip
    result = parse_inbound_json(payload, DOMAIN)
    assert result == InboundMail(kind="reply", message_id=B, received_message_id="<sg1@example.org>", sender="bob@example.org",
                                 subject="Re: Your demo is ready", occurred_at="2024-05-15T08:01:05+00:00")


def test_sendgrid_raw_mime_is_preferred_to_the_parsed_fields() -> None:
    payload = {
        "email": load("postfix_hard_bounce.eml").decode(), "from": "someone@example.org",
        "headers": f"From: someone@example.org\nIn-Reply-To: {B}\n", "text": "Sounds good",
    }
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and (result.kind, result.message_id, result.bounce_kind) == ("bounce", A, "hard")


def test_mailgun_route_with_message_headers() -> None:
    headers = [
        ["Received", "from mail.example.org by mxa.mailgun.org with ESMTP"], ["From", "Bob Martin <bob@example.org>"],
        ["Subject", "Re: Your demo is ready"], ["Message-Id", "<mg1@example.org>"], ["In-Reply-To", C],
        ["References", C], ["Date", "Wed, 15 May 2024 10:01:05 +0200"], ["Content-Type", 'multipart/alternative; boundary="q"'],
    ]  # fmt: skip
    payload = {
        "recipient": "sales@example.com", "sender": "bob@example.org", "from": "Bob Martin <bob@example.org>",
        "subject": "Re: Your demo is ready", "body-plain": "Yes.\n\n> quoted", "stripped-text": "Yes.",
        "message-headers": json.dumps(headers), "In-Reply-To": C, "References": C, "timestamp": "1715760072",
    }  # fmt: skip
    result = parse_inbound_json(payload, DOMAIN)
    assert result == InboundMail(kind="reply", message_id=C, received_message_id="<mg1@example.org>", sender="bob@example.org",
                                 subject="Re: Your demo is ready", occurred_at="2024-05-15T08:01:05+00:00")


def test_mailgun_routed_fields_alone_are_enough() -> None:
    payload = {"sender": "bob@example.org", "subject": "Re: hi", "body-plain": "Yes.", "In-Reply-To": A, "References": A}
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and (result.kind, result.message_id, result.sender) == ("reply", A, "bob@example.org")
    assert result.received_message_id.startswith("sha256:")
    assert parse_inbound_json(dict(payload), DOMAIN) == result  # the fallback id is as deterministic as the payload


def test_a_provider_header_value_cannot_inject_a_field() -> None:
    headers = [["From", "bob@example.org"], ["In-Reply-To", f"{A}\r\nX-Autoreply: yes\r\nAuto-Submitted: auto-replied"]]
    payload = {"message-headers": headers, "body-plain": "Real answer", "Subject\r\nPrecedence": "bulk"}
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and result.kind == "reply" and result.message_id == A


def test_mailgun_plain_text_bounce() -> None:
    payload = {
        "message-headers": json.dumps([["From", "Mail Delivery System <MAILER-DAEMON@mx.example.net>"],
                                       ["Subject", "Undelivered Mail Returned to Sender"]]),
        "body-plain": f"<gone@example.net>: host mx.example.net said: 550 5.1.1 User unknown\n\nMessage-ID: {A}\n",
    }
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and (result.kind, result.bounce_kind, result.status, result.message_id) == ("bounce", "hard", "5.1.1", A)


def test_postmark_inbound() -> None:
    payload = {
        "FromName": "Bob Martin", "From": "bob@example.org", "FromFull": {"Email": "bob@example.org", "Name": "Bob Martin"},
        "To": "sales@example.com", "Subject": "Re: Your demo is ready", "Date": "Wed, 15 May 2024 04:01:05 -04:00",
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90", "TextBody": "Yes.\n\nOn Tue ... wrote:\n> quoted",
        "StrippedTextReply": "Yes.", "MailboxHash": "", "Tag": "",
        "Headers": [{"Name": "X-Spam-Status", "Value": "No"}, {"Name": "Message-ID", "Value": "<pm1@example.org>"},
                    {"Name": "In-Reply-To", "Value": B}, {"Name": "References", "Value": B}],
    }  # fmt: skip
    result = parse_inbound_json(payload, DOMAIN)
    assert result == InboundMail(kind="reply", message_id=B, received_message_id="<pm1@example.org>", sender="bob@example.org",
                                 subject="Re: Your demo is ready", occurred_at="2024-05-15T08:01:05+00:00")


def test_postmark_auto_reply_and_its_message_id_fallback() -> None:
    payload = {
        "From": "erik@example.se", "Subject": "Out of office", "MessageID": "a8c1040e-db1c-4e18-ac79-bc5f64c7ce2c",
        "TextBody": "Back on Monday.",
        "Headers": [{"Name": "In-Reply-To", "Value": A}, {"Name": "Auto-Submitted", "Value": "auto-replied"}],
    }  # fmt: skip
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and (result.kind, result.message_id) == ("auto_reply", A)
    assert result.received_message_id == "<a8c1040e-db1c-4e18-ac79-bc5f64c7ce2c>"


def test_postmark_raw_email_is_preferred() -> None:
    payload = {"RawEmail": load("exchange_dsn.eml").decode(), "From": "x@example.org", "Headers": []}
    result = parse_inbound_json(payload, DOMAIN)
    assert result is not None and (result.kind, result.message_id, result.status) == ("bounce", C, "5.1.10")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=200) | st.binary(max_size=200),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["Name", "Value", "Email"]), inner, max_size=3),
    max_leaves=12,
)
PROVIDER_KEYS = ["email", "body-mime", "RawEmail", "headers", "from", "subject", "text", "message-headers", "body-plain",
                 "sender", "In-Reply-To", "References", "Headers", "MessageID", "From", "FromFull", "TextBody", "Subject", "Date"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(PROVIDER_KEYS), JSON | st.just(A) | st.just([["In-Reply-To", A]]), max_size=8))
def test_arbitrary_payloads_give_an_answer_or_mail_error(payload: dict[str, Any]) -> None:
    try:
        assert_clean(parse_inbound_json(payload, DOMAIN))
    except MailError:
        pass


@pytest.mark.parametrize("payload", [{}, {"foo": "bar"}, ["headers"], "email"])
def test_a_payload_that_is_no_provider_shape_is_refused(payload: Any) -> None:
    with pytest.raises(MailError):
        parse_inbound_json(payload, DOMAIN)


def test_an_oversized_payload_is_refused() -> None:
    with pytest.raises(MailError, match="limit"):
        parse_inbound_json({"email": "x" * (10 * 1024 * 1024 + 1)}, DOMAIN)
    with pytest.raises(MailError, match="limit"):
        parse_inbound_json({"headers": f"In-Reply-To: {A}\n", "text": "x" * (10 * 1024 * 1024 + 1)}, DOMAIN)
