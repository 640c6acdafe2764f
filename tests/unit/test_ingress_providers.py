"""Providers' verified payloads as DEE events: every documented event the kernel acts on mapped
(bounce kinds, click URLs, call outcomes), the rest skipped, malformed payloads refused with
`PayloadError`. Sample bodies under data/webhooks/ follow the providers' documented examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest

from dee.ingress.providers import (
    CALL_OUTCOMES,
    EVENT_TYPES,
    InboundEvent,
    PayloadError,
    events_from_mailgun,
    events_from_postmark,
    events_from_sendgrid,
    events_from_ses,
    events_from_standard_webhooks,
    events_from_twilio,
    sns_subscribe_url,
)

DATA = Path(__file__).parent / "data" / "webhooks"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def only(events: list[InboundEvent]) -> InboundEvent:
    assert len(events) == 1, events
    return events[0]


def test_an_inbound_event_is_frozen_and_encodes() -> None:
    event = InboundEvent(type="email.opened", provider_event_id="e1")
    with pytest.raises(AttributeError):
        event.type = "email.clicked"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(event)) == {
        "type": "email.opened", "provider_event_id": "e1", "message_id": None, "recipient": None, "data": {}, "occurred_at": None,
    }  # fmt: skip
    assert "email.replied" in EVENT_TYPES and "call.voicemail" in EVENT_TYPES


# --- SendGrid -----------------------------------------------------------------------------------


def test_sendgrid_maps_each_documented_event_and_skips_the_rest() -> None:
    events = events_from_sendgrid(sample("sendgrid_events.json"))
    by_id = {e.provider_event_id: e for e in events}
    assert [e.type for e in events] == [
        "email.delivered", "email.opened", "email.clicked", "email.bounced", "email.bounced", "email.bounced",
        "email.complained", "email.unsubscribed", "email.unsubscribed",
    ]  # fmt: skip  (processed, deferred and group_resubscribe skipped)
    delivered = by_id["rWVYmVk90MjZJ9iohOBa3w=="]
    assert delivered.message_id == "<14c5d75ce93.dfd.64b469@ismtpd-555>" and delivered.recipient == "example@test.com"
    assert delivered.occurred_at == "2017-12-15T00:59:29.000+00:00"
    assert delivered.data == {"provider_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000"}
    assert by_id["6g4ZI7SA-xmRDv57GoPIPw=="].data["kind"] == "hard"
    assert by_id["6g4ZI7SA-xmRDv57GoPIPw=="].data["reason"] == "500 unknown recipient"
    assert by_id["8g4ZI7SA-xmRDv57GoPIPw=="].data["kind"] == "soft"  # type blocked
    assert by_id["zmzJhfJgAfUSOW80yEbPyw=="].data["kind"] == "hard"  # dropped: Bounced Address
    assert by_id["kCAi1KttyQdEKHhdC-nuEA=="].data["url"] == "http://www.sendgrid.com/"
    assert by_id["kCAi1KttyQdEKHhdC-nuEA=="].message_id is None  # engagement events carry no smtp-id
    assert by_id["FOTFFO0ecsBE-zxFXfs6WA=="].data["machine_open"] is False
    assert by_id["ahSCB7xYcXFb-hEaawsPRw=="].data["group_id"] == 10


def test_sendgrid_drops_are_hard_only_for_suppressions() -> None:
    def drop(reason: str) -> InboundEvent:
        return only(events_from_sendgrid([{"event": "dropped", "email": "a@x.io", "sg_event_id": "d", "reason": reason}]))

    assert drop("Invalid").data["kind"] == "hard"
    assert drop("Unsubscribed Address").data["kind"] == "hard"
    assert drop("Spam Reporting Address").data["kind"] == "hard"
    assert drop("Recipient List over Package Quota").data["kind"] == "soft"


def test_sendgrid_accepts_bytes_str_and_decoded_json_alike() -> None:
    body = sample("sendgrid_events.json")
    assert events_from_sendgrid(body) == events_from_sendgrid(body.decode()) == events_from_sendgrid(json.loads(body))


@pytest.mark.parametrize("body", [
    b"{not json", b'{"event": "delivered"}', b"[1]", b'[{"event": "delivered", "email": "a@x.io"}]',
    b'[{"event": "delivered", "sg_event_id": "e"}]', b'[{"event": "click", "email": "a@x.io", "sg_event_id": "e"}]',
    b'[{"event": "open", "email": "a@x.io", "sg_event_id": "e", "timestamp": "soon"}]',
])  # fmt: skip
def test_sendgrid_refuses_malformed_payloads(body: bytes) -> None:
    with pytest.raises(PayloadError):
        events_from_sendgrid(body)


def test_sendgrid_unknown_events_are_skipped_not_refused() -> None:
    assert events_from_sendgrid(b'[{"event": "something_new"}, {"no": "event"}]') == []


# --- Mailgun ------------------------------------------------------------------------------------


def mailgun(**event: Any) -> dict[str, Any]:
    return {"signature": {}, "event-data": {"id": "ev-1", "recipient": "alice@example.com", "timestamp": 1521472262.908181, **event}}


def test_mailgun_permanent_failure_is_a_hard_bounce_with_its_message_id_bracketed() -> None:
    event = only(events_from_mailgun(sample("mailgun_failed.json")))
    assert event == InboundEvent(
        type="email.bounced", provider_event_id="G9Bn5sl1TC6nu79C8C0bwg", message_id="<20130503192659.13651.20287@sandbox.mailgun.org>",
        recipient="alice@example.com", data={"kind": "hard", "reason": "Not delivering to previously bounced address"},
        occurred_at="2018-03-16T20:46:35.375+00:00",
    )  # fmt: skip


def test_mailgun_maps_each_documented_event() -> None:
    assert only(events_from_mailgun(mailgun(event="delivered"))).type == "email.delivered"
    temporary = only(events_from_mailgun(mailgun(event="failed", severity="temporary", reason="generic",
                                                 **{"delivery-status": {"message": "4.2.2 mailbox full"}})))  # fmt: skip
    assert temporary.data == {"kind": "soft", "reason": "4.2.2 mailbox full"}
    assert only(events_from_mailgun(mailgun(event="failed", severity="permanent", reason="bounce"))).data == {
        "kind": "hard", "reason": "bounce",
    }  # fmt: skip
    assert only(events_from_mailgun(mailgun(event="complained"))).type == "email.complained"
    assert only(events_from_mailgun(mailgun(event="opened"))).type == "email.opened"
    clicked = only(events_from_mailgun(mailgun(event="clicked", url="https://example.com/offer")))
    assert clicked.type == "email.clicked" and clicked.data == {"url": "https://example.com/offer"}
    assert only(events_from_mailgun(mailgun(event="unsubscribed"))).type == "email.unsubscribed"
    for skipped in ("accepted", "rejected", "stored", "list_member_uploaded"):
        assert events_from_mailgun(mailgun(event=skipped)) == []


def test_mailgun_refuses_malformed_payloads() -> None:
    for body in (b"[]", b"{}", b'{"event-data": []}', json.dumps(mailgun(event="opened", id=None)).encode(),
                 json.dumps(mailgun(event="opened", recipient="")).encode(), json.dumps(mailgun(event="clicked")).encode()):  # fmt: skip
        with pytest.raises(PayloadError):
            events_from_mailgun(body)


# --- SES through SNS ----------------------------------------------------------------------------


def sns(record: dict[str, Any] | str, kind: str = "Notification") -> dict[str, Any]:
    return {"Type": kind, "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses",
            "Timestamp": "2017-08-05T00:41:03.000Z", "Message": record if isinstance(record, str) else json.dumps(record)}  # fmt: skip


def ses(kind: str, section: dict[str, Any] | None = None, *, notification: bool = False, **mail: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"notificationType" if notification else "eventType": kind,
                              "mail": {"messageId": "ses-msg-1", "destination": ["r@example.com"], **mail}}  # fmt: skip
    if section is not None:
        record[kind.lower()] = section
    return sns(record)


def test_ses_bounce_from_the_guides_example_is_hard_with_the_diagnostic() -> None:
    record = json.loads(sample("ses_bounce_record.json"))
    event = only(events_from_ses(json.dumps(sns(record)).encode()))
    assert event == InboundEvent(
        type="email.bounced", provider_event_id="sns-1", message_id="<0a1b2c3d4e5f@dee.example.com>",  # the Message-ID header
        recipient="recipient@example.com",
        data={"kind": "hard", "reason": "smtp; 550 5.1.1 user unknown",
              "provider_message_id": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"},
        occurred_at="2017-08-05T00:41:02.669+00:00",
    )  # fmt: skip


def test_ses_message_id_falls_back_to_common_headers_only_when_it_is_a_message_id() -> None:
    record = json.loads(sample("ses_bounce_record.json"))
    record["mail"]["headers"] = []
    assert only(events_from_ses(sns(record))).message_id is None  # commonHeaders holds SES's own id there
    record["mail"]["commonHeaders"]["messageId"] = "abc@dee.example.com"
    assert only(events_from_ses(sns(record))).message_id == "<abc@dee.example.com>"


def test_ses_transient_and_undetermined_bounces_are_soft() -> None:
    for bounce_type in ("Transient", "Undetermined"):
        section = {"bounceType": bounce_type, "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "r@example.com"}]}
        event = only(events_from_ses(ses("Bounce", section)))
        assert event.data["kind"] == "soft" and event.data["reason"] == f"{bounce_type}/MailboxFull"


def test_ses_notifications_and_event_publishing_map_alike() -> None:
    delivery = {"timestamp": "2016-01-27T14:59:38.237Z", "recipients": ["r@example.com"], "smtpResponse": "250 ok"}
    for notification in (True, False):
        event = only(events_from_ses(ses("Delivery", delivery, notification=notification)))
        assert (event.type, event.recipient, event.occurred_at) == ("email.delivered", "r@example.com", "2016-01-27T14:59:38.237+00:00")
    complaint = {"complainedRecipients": [{"emailAddress": "r@example.com"}], "complaintFeedbackType": "abuse"}
    event = only(events_from_ses(ses("Complaint", complaint, notification=True)))
    assert event.type == "email.complained" and event.data["feedback_type"] == "abuse"


def test_ses_open_and_click_go_to_the_single_destination() -> None:
    opened = only(events_from_ses(ses("Open", {"timestamp": "2017-08-09T22:00:19.652Z", "ipAddress": "192.0.2.1"})))
    assert (opened.type, opened.recipient, opened.provider_event_id) == ("email.opened", "r@example.com", "sns-1")
    clicked = only(events_from_ses(ses("Click", {"timestamp": "2017-08-09T23:51:25.570Z", "link": "https://docs.aws.amazon.com/ses"})))
    assert clicked.type == "email.clicked" and clicked.data["url"] == "https://docs.aws.amazon.com/ses"
    several = only(events_from_ses(ses("Open", {}, destination=["a@example.com", "b@example.com"])))
    assert several.recipient is None


def test_ses_one_notification_for_several_recipients_is_an_event_each() -> None:
    section = {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}]}
    events = events_from_ses(ses("Bounce", section))
    assert [(e.recipient, e.provider_event_id) for e in events] == [("a@example.com", "sns-1:a@example.com"),
                                                                    ("b@example.com", "sns-1:b@example.com")]  # fmt: skip


def test_ses_skips_other_types_and_sns_subscription_messages() -> None:
    for kind in ("Send", "Reject", "Rendering Failure", "DeliveryDelay", "Subscription", "AmazonSnsSubscriptionSucceeded"):
        assert events_from_ses(ses(kind, {})) == []
    assert events_from_ses(sns("{}", kind="SubscriptionConfirmation")) == []


def test_ses_refuses_malformed_payloads() -> None:
    not_an_object: Any = []
    for document in (sns("not json"), sns("[]"), {**sns("{}"), "Message": None}, {**sns("{}"), "MessageId": None},
                     ses("Bounce", {"bouncedRecipients": [{"status": "5.1.1"}]}), ses("Click", {}), ses("Delivery", not_an_object),
                     ses("Delivery", {"timestamp": "yesterday"})):  # fmt: skip
        with pytest.raises(PayloadError):
            events_from_ses(document)


def test_sns_subscribe_url_only_for_a_confirmation_on_an_sns_host() -> None:
    url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:ses&Token=2336"
    assert sns_subscribe_url({**sns("{}", kind="SubscriptionConfirmation"), "SubscribeURL": url}) == url
    assert sns_subscribe_url({**sns("{}", kind="SubscriptionConfirmation"), "SubscribeURL": "https://169.254.169.254/latest"}) is None
    assert sns_subscribe_url({**sns("{}"), "SubscribeURL": url}) is None


# --- Postmark -----------------------------------------------------------------------------------


def test_postmark_hard_bounce_from_the_docs_example() -> None:
    event = only(events_from_postmark(sample("postmark_bounce.json")))
    assert event == InboundEvent(
        type="email.bounced", provider_event_id="4323372036854775807", recipient="john@example.com",
        data={"kind": "hard", "reason": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
              "provider_message_id": "883953f4-6105-42a2-a16a-77a8eac79483"},
        occurred_at="2019-11-05T16:33:54.907+00:00",
    )  # fmt: skip


def test_postmark_bounce_types() -> None:
    base = json.loads(sample("postmark_bounce.json")) | {"Inactive": False}

    def bounce(kind: str, **more: Any) -> list[InboundEvent]:
        return events_from_postmark({**base, "Type": kind, **more})

    assert only(bounce("SoftBounce")).data["kind"] == "soft"
    assert only(bounce("Transient")).data["kind"] == "soft"
    assert only(bounce("DnsError")).data["kind"] == "soft"
    assert only(bounce("BadEmailAddress")).data["kind"] == "hard"
    assert only(bounce("SoftBounce", Inactive=True)).data["kind"] == "hard"  # Postmark deactivated the address
    assert only(bounce("SpamComplaint")).type == "email.complained"
    assert only(bounce("Unsubscribe")).type == "email.unsubscribed"
    for not_a_failure in ("AutoResponder", "Subscribe", "AddressChange", "OpenRelayTest", "ChallengeVerification"):
        assert bounce(not_a_failure) == []


def test_postmark_delivery_open_click_complaint_and_subscription_change() -> None:
    message = "883953f4-6105-42a2-a16a-77a8eac79483"
    delivery = only(events_from_postmark({"RecordType": "Delivery", "MessageID": message, "Recipient": "john@example.com",
                                          "DeliveredAt": "2019-11-05T16:33:54.9070259Z", "Details": "Test delivery details"}))  # fmt: skip
    assert (delivery.type, delivery.provider_event_id) == ("email.delivered", f"{message}:Delivery:john@example.com")
    opened = only(events_from_postmark({"RecordType": "Open", "MessageID": message, "Recipient": "john@example.com",
                                        "ReceivedAt": "2019-11-05T16:33:54.9070259Z", "FirstOpen": True}))  # fmt: skip
    assert opened.type == "email.opened" and opened.data["first_open"] is True
    assert opened.provider_event_id == f"{message}:Open:john@example.com:2019-11-05T16:33:54.9070259Z"
    clicked = only(events_from_postmark({"RecordType": "Click", "MessageID": message, "Recipient": "john@example.com",
                                         "ReceivedAt": "2017-10-25T15:21:11.0Z", "OriginalLink": "https://example.com"}))  # fmt: skip
    assert clicked.type == "email.clicked" and clicked.data["url"] == "https://example.com"
    complaint = only(events_from_postmark({"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint", "MessageID": message,
                                           "Email": "john@example.com", "BouncedAt": "2019-11-05T16:33:54Z"}))  # fmt: skip
    assert (complaint.type, complaint.provider_event_id) == ("email.complained", "42")
    change = {"RecordType": "SubscriptionChange", "MessageID": message, "Recipient": "john@example.com",
              "ChangedAt": "2020-02-01T10:53:34.416071Z", "SuppressSending": True, "SuppressionReason": "ManualSuppression"}  # fmt: skip
    unsubscribed = only(events_from_postmark(change))
    assert unsubscribed.type == "email.unsubscribed" and unsubscribed.data["reason"] == "ManualSuppression"
    assert events_from_postmark({**change, "SuppressSending": False}) == []  # reactivated: nothing to act on
    assert events_from_postmark({"RecordType": "Inbound"}) == []


def test_postmark_refuses_malformed_payloads() -> None:
    for body in (b"[]", b"nope", b'{"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@x.io"}',
                 b'{"RecordType": "Delivery", "MessageID": "m"}', b'{"RecordType": "Click", "MessageID": "m", "Recipient": "a@x.io"}',
                 b'{"RecordType": "Bounce", "Type": "HardBounce", "ID": 1, "Email": "a@x.io", "BouncedAt": "later"}'):  # fmt: skip
        with pytest.raises(PayloadError):
            events_from_postmark(body)


# --- Standard Webhooks --------------------------------------------------------------------------


def test_standard_webhooks_passes_dee_events_through() -> None:
    body = {"type": "email.replied", "timestamp": "2022-11-03T20:26:10.344522Z",
            "data": {"message_id": "<k@dee.example.com>", "recipient": "a@example.com", "snippet": "Thanks!"}}  # fmt: skip
    event = only(events_from_standard_webhooks(json.dumps(body).encode(), webhook_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"))
    assert event == InboundEvent(type="email.replied", provider_event_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                                 message_id="<k@dee.example.com>", recipient="a@example.com", data={"snippet": "Thanks!"},
                                 occurred_at="2022-11-03T20:26:10.344+00:00")  # fmt: skip
    call = only(events_from_standard_webhooks({"id": "evt-9", "type": "call.completed", "data": {"outcome": "answered"}}))
    assert (call.provider_event_id, call.data, call.occurred_at) == ("evt-9", {"outcome": "answered"}, None)


def test_standard_webhooks_refuses_what_dee_does_not_know() -> None:
    body: Any
    for body in ({"type": "user.created", "data": {}}, {"type": "email.bounced", "data": {"kind": "medium"}},
                 {"type": "call.failed", "data": {"outcome": "exploded"}}, {"type": "email.opened", "data": []},
                 {"type": "email.opened", "data": {"message_id": 7}}, []):  # fmt: skip
        with pytest.raises(PayloadError):
            events_from_standard_webhooks(body, webhook_id="m1")
    assert only(events_from_standard_webhooks({"type": "email.opened"}, webhook_id="m1")).data == {}  # no data is fine
    with pytest.raises(PayloadError):  # no id at all
        events_from_standard_webhooks({"type": "email.opened"})


# --- Twilio -------------------------------------------------------------------------------------


def twilio(status: str, **more: str) -> bytes:
    fields = {"AccountSid": "AC1", "CallSid": "CA42", "CallStatus": status, "To": "+15005550006", "From": "+15005550001",
              "Direction": "outbound-api", "Timestamp": "Tue, 08 Aug 2023 17:18:50 +0000", **more}  # fmt: skip
    return urlencode(fields).encode()


@pytest.mark.parametrize(("status", "answered_by", "event_type", "outcome"), [
    ("initiated", None, "call.initiated", None), ("ringing", None, "call.ringing", None), ("in-progress", None, "call.answered", None),
    ("completed", None, "call.completed", "answered"), ("completed", "human", "call.completed", "answered"),
    ("completed", "unknown", "call.completed", "answered"), ("completed", "machine_start", "call.voicemail", "voicemail"),
    ("completed", "machine_end_beep", "call.voicemail", "voicemail"), ("completed", "machine_end_silence", "call.voicemail", "voicemail"),
    ("completed", "machine_end_other", "call.voicemail", "voicemail"), ("completed", "fax", "call.failed", "failed"),
    ("busy", None, "call.failed", "busy"), ("no-answer", None, "call.failed", "no_answer"), ("failed", None, "call.failed", "failed"),
    ("canceled", None, "call.failed", "declined"),
])  # fmt: skip
def test_twilio_call_statuses(status: str, answered_by: str | None, event_type: str, outcome: str | None) -> None:
    more = {"AnsweredBy": answered_by} if answered_by else {}
    event = only(events_from_twilio(twilio(status, CallDuration="17", **more)))
    assert (event.type, event.provider_event_id, event.recipient) == (event_type, f"CA42:{status}", "+15005550006")
    assert event.occurred_at == "2023-08-08T17:18:50.000+00:00"
    assert event.data.get("outcome") == outcome and event.data["callSid"] == "CA42" and event.data["duration"] == 17
    assert outcome is None or outcome in CALL_OUTCOMES


def test_twilio_takes_parsed_fields_and_skips_queued_and_unknown_statuses() -> None:
    event = only(events_from_twilio({"CallSid": "CA1", "CallStatus": "ringing"}))
    assert event.data == {"callSid": "CA1"} and event.occurred_at is None and event.recipient is None
    assert events_from_twilio(twilio("queued")) == []
    assert events_from_twilio(twilio("teleported")) == []


def test_twilio_refuses_malformed_payloads() -> None:
    for body in (b"CallStatus=completed", b"CallSid=CA1", twilio("completed", CallDuration="long"), twilio("completed", Timestamp="soon"),
                 b"\xff\xfe"):  # fmt: skip
        with pytest.raises(PayloadError):
            events_from_twilio(body)
    with pytest.raises(PayloadError):
        events_from_twilio(42)  # type: ignore[arg-type]
