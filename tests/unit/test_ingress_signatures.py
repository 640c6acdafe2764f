"""Webhook signature verifiers: each provider's published test vector where it gives one, else
requests signed here by the documented algorithm with our own keys; and every way a request can
be forged (altered body, header or timestamp, wrong key, missing header, stale or future time,
a replayed Mailgun token) refused with `SignatureError`, whose message and the verifiers' reprs
never hold a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from dee.ingress.signatures import (
    DEFAULT_TOLERANCE,
    MailgunVerifier,
    PostmarkVerifier,
    SendGridVerifier,
    SignatureError,
    SnsVerifier,
    StandardWebhooksVerifier,
    TwilioVerifier,
    is_sns_url,
)

NOW = 1_700_000_000.0
URL = "https://dee.example.com/ingress/webhooks"


def refused(call: Callable[[], None], reason: str | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        call()
    if reason is not None:
        assert reason in str(caught.value)
    return caught.value


# --- SendGrid -----------------------------------------------------------------------------------

# the vector of sendgrid-python's test/unit/test_eventwebhook.py (SendGrid's own library)
SG_PUBLIC_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpig"
                 "lSI8eNEc6wEA3F+g==")  # fmt: skip
SG_OTHER_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb"
                "/R1NGe1OPzpA==")  # fmt: skip
SG_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    b'[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address",'
    b'"sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",'
    b'"sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",'
    b'"smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]\r\n'
)
SG_NOW = 1600112502.0 + 30


def sg_headers(signature: str = SG_SIGNATURE, timestamp: str = SG_TIMESTAMP) -> dict[str, str]:
    return {"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sg_own(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return sg_headers(base64.b64encode(signature).decode(), str(timestamp))


def spki_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def test_sendgrid_accepts_its_published_vector() -> None:
    SendGridVerifier(SG_PUBLIC_KEY).verify(sg_headers(), SG_PAYLOAD, URL, SG_NOW)


def test_sendgrid_refuses_the_published_vector_with_the_published_other_key() -> None:
    refused(lambda: SendGridVerifier(SG_OTHER_KEY).verify(sg_headers(), SG_PAYLOAD, URL, SG_NOW), "signature mismatch")


def test_sendgrid_refuses_an_altered_body_or_timestamp() -> None:
    verifier = SendGridVerifier(SG_PUBLIC_KEY)
    refused(lambda: verifier.verify(sg_headers(), SG_PAYLOAD.replace(b"dropped", b"bounce"), URL, SG_NOW), "signature mismatch")
    refused(lambda: verifier.verify(sg_headers(), SG_PAYLOAD.rstrip(b"\r\n"), URL, SG_NOW), "signature mismatch")
    refused(lambda: verifier.verify(sg_headers(timestamp="1600112503"), SG_PAYLOAD, URL, SG_NOW), "signature mismatch")


def test_sendgrid_with_a_generated_key_in_base64_der_and_in_pem(ec_key: ec.EllipticCurvePrivateKey) -> None:
    body = b'[{"event":"delivered","email":"a@example.com","sg_event_id":"e1","timestamp":1699999990}]'
    headers = sg_own(ec_key, body, int(NOW) - 10)
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    SendGridVerifier(spki_b64(ec_key)).verify(headers, body, URL, NOW)
    SendGridVerifier(pem).verify(headers, body, URL, NOW)
    SendGridVerifier(spki_b64(ec_key)).verify({k.lower(): v for k, v in headers.items()}, body, URL, NOW)  # any header case
    refused(lambda: SendGridVerifier(spki_b64(ec_key)).verify(headers, body + b" ", URL, NOW), "signature mismatch")
    refused(lambda: SendGridVerifier(spki_b64(ec.generate_private_key(ec.SECP256R1()))).verify(headers, body, URL, NOW))


def test_sendgrid_refuses_stale_and_future_timestamps_even_when_signed(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier, body = SendGridVerifier(spki_b64(ec_key)), b"[]"
    verifier.verify(sg_own(ec_key, body, int(NOW - DEFAULT_TOLERANCE)), body, URL, NOW)  # the edge of the window
    refused(lambda: verifier.verify(sg_own(ec_key, body, int(NOW - DEFAULT_TOLERANCE) - 1), body, URL, NOW), "too old")
    refused(lambda: verifier.verify(sg_own(ec_key, body, int(NOW + DEFAULT_TOLERANCE) + 1), body, URL, NOW), "too new")
    refused(lambda: verifier.verify(sg_headers(), SG_PAYLOAD, URL, NOW), "too old")  # the published vector, years later
    short = SendGridVerifier(spki_b64(ec_key), tolerance=5)
    refused(lambda: short.verify(sg_own(ec_key, body, int(NOW) - 6), body, URL, NOW), "too old")


def test_sendgrid_refuses_missing_or_malformed_headers(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier, body = SendGridVerifier(spki_b64(ec_key)), b"[]"
    headers = sg_own(ec_key, body, int(NOW))
    for name in headers:
        without = {k: v for k, v in headers.items() if k != name}
        refused(lambda without=without: verifier.verify(without, body, URL, NOW), "missing")  # type: ignore[misc]
    refused(lambda: verifier.verify({**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%%"}, body, URL, NOW), "not base64")
    refused(lambda: verifier.verify({**headers, "X-Twilio-Email-Event-Webhook-Signature": "AAAA"}, body, URL, NOW), "mismatch")
    refused(lambda: verifier.verify({**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "-1"}, body, URL, NOW), "Unix time")


def test_sendgrid_refuses_a_key_that_is_not_p256() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="P-256"):
        SendGridVerifier(base64.b64encode(der).decode())
    with pytest.raises(ValueError, match="public key"):
        SendGridVerifier("not a key")


# --- Mailgun ------------------------------------------------------------------------------------

MG_KEY = "mg-signing-key-7f3a9c"


def mg_body(token: str = "t" * 50, timestamp: int | str = int(NOW), key: str = MG_KEY, **override: Any) -> bytes:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    signed = {"timestamp": str(timestamp), "token": token, "signature": signature, **override}
    return json.dumps({"signature": signed, "event-data": {"event": "delivered", "id": "ev1"}}).encode()


def test_mailgun_accepts_a_request_signed_as_documented() -> None:
    MailgunVerifier(MG_KEY).verify({}, mg_body(), URL, NOW)


def test_mailgun_accepts_an_integer_timestamp_as_the_docs_table_types_it() -> None:
    signature = hmac.new(MG_KEY.encode(), f"{int(NOW)}tok".encode(), hashlib.sha256).hexdigest()
    body = json.dumps({"signature": {"timestamp": int(NOW), "token": "tok", "signature": signature}, "event-data": {}}).encode()
    MailgunVerifier(MG_KEY).verify({}, body, URL, NOW)


def test_mailgun_refuses_altered_signed_fields_and_a_wrong_key() -> None:
    good = json.loads(mg_body())
    for field, value in (("token", "u" * 50), ("timestamp", str(int(NOW) + 1)), ("signature", "0" * 64)):
        body = json.dumps({**good, "signature": {**good["signature"], field: value}}).encode()
        refused(lambda body=body: MailgunVerifier(MG_KEY).verify({}, body, URL, NOW), "signature mismatch")  # type: ignore[misc]
    refused(lambda: MailgunVerifier("another-key").verify({}, mg_body(), URL, NOW), "signature mismatch")


def test_mailgun_signs_only_timestamp_and_token_so_event_data_is_not_covered() -> None:
    """What Mailgun documents, and so what its verifier can promise: the origin, not the event."""
    body = json.loads(mg_body())
    body["event-data"]["event"] = "failed"
    MailgunVerifier(MG_KEY).verify({}, json.dumps(body).encode(), URL, NOW)


def test_mailgun_refuses_missing_or_malformed_signature_fields() -> None:
    verifier = MailgunVerifier(MG_KEY)
    refused(lambda: verifier.verify({}, b"not json", URL, NOW), "not JSON")
    refused(lambda: verifier.verify({}, b'{"event-data": {}}', URL, NOW), "missing signature")
    refused(lambda: verifier.verify({}, b"[]", URL, NOW), "missing signature")
    for field in ("timestamp", "token", "signature"):
        body = json.loads(mg_body())
        del body["signature"][field]
        refused(lambda body=body: verifier.verify({}, json.dumps(body).encode(), URL, NOW), "incomplete")  # type: ignore[misc]
    refused(lambda: verifier.verify({}, mg_body(timestamp="1.5e9"), URL, NOW), "Unix time")


def test_mailgun_refuses_stale_and_future_timestamps() -> None:
    verifier = MailgunVerifier(MG_KEY)
    refused(lambda: verifier.verify({}, mg_body(timestamp=int(NOW - DEFAULT_TOLERANCE) - 1), URL, NOW), "too old")
    refused(lambda: verifier.verify({}, mg_body(timestamp=int(NOW + DEFAULT_TOLERANCE) + 1), URL, NOW), "too new")


def test_mailgun_refuses_a_replayed_token_even_in_a_fresh_signed_request() -> None:
    verifier = MailgunVerifier(MG_KEY)
    verifier.verify({}, mg_body(token="a" * 50), URL, NOW)
    refused(lambda: verifier.verify({}, mg_body(token="a" * 50), URL, NOW + 1), "token already used")
    refused(lambda: verifier.verify({}, mg_body(token="a" * 50, timestamp=int(NOW) + 60), URL, NOW + 60), "token already used")
    verifier.verify({}, mg_body(token="b" * 50), URL, NOW + 1)
    other = MailgunVerifier(MG_KEY)  # the cache is the instance's, not global
    other.verify({}, mg_body(token="a" * 50), URL, NOW)


def test_mailgun_does_not_burn_a_token_on_a_forged_request() -> None:
    verifier = MailgunVerifier(MG_KEY)
    refused(lambda: verifier.verify({}, mg_body(token="c" * 50, key="forger"), URL, NOW), "signature mismatch")
    verifier.verify({}, mg_body(token="c" * 50), URL, NOW)


def test_mailgun_forgets_tokens_once_their_requests_would_be_too_old_anyway() -> None:
    verifier = MailgunVerifier(MG_KEY, tolerance=60)
    verifier.verify({}, mg_body(token="d" * 50), URL, NOW)
    later = NOW + 61
    refused(lambda: verifier.verify({}, mg_body(token="d" * 50), URL, later), "too old")  # refused by time, not the cache
    verifier.verify({}, mg_body(token="e" * 50, timestamp=int(later)), URL, later)
    assert "d" * 50 not in verifier._seen and list(verifier._seen) == ["e" * 50]


def test_mailgun_replay_cache_is_bounded_dropping_the_oldest() -> None:
    verifier = MailgunVerifier(MG_KEY, max_tokens=2)
    for token in ("f", "g", "h"):
        verifier.verify({}, mg_body(token=token * 50), URL, NOW)
    assert list(verifier._seen) == ["g" * 50, "h" * 50]
    refused(lambda: verifier.verify({}, mg_body(token="h" * 50), URL, NOW), "token already used")


# --- SNS (Amazon SES) ---------------------------------------------------------------------------

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


def make_cert(key: rsa.RSAPrivateKey, not_before: datetime, not_after: datetime) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    now = datetime.fromtimestamp(NOW, UTC)
    return make_cert(rsa_key, now - timedelta(days=30), now + timedelta(days=30))


def sns_iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sns_message(key: rsa.RSAPrivateKey, *, kind: str = "Notification", version: str = "2", at: float = NOW,
                subject: str | None = "Amazon SES Email Event Notification", **fields: str) -> dict[str, Any]:  # fmt: skip
    """An SNS message signed as the SNS guide describes (its canonical string, then RSA)."""
    message: dict[str, Any] = {"Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": TOPIC,
                               "Message": '{"eventType":"Delivery"}', "Timestamp": sns_iso(at), "SignatureVersion": version,
                               "SigningCertURL": CERT_URL}  # fmt: skip
    if kind == "Notification":
        if subject is not None:
            message["Subject"] = subject
        signed: tuple[str, ...] = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    else:
        message.update(Token="2336412f37f", SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336")
        signed = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    message.update(fields)
    canonical = "".join(f"{name}\n{message[name]}\n" for name in signed if name in message).encode()
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    message["Signature"] = base64.b64encode(key.sign(canonical, padding.PKCS1v15(), algorithm)).decode()
    return message


def sns(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def test_sns_accepts_signature_version_2_and_1_notifications(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    verifier = SnsVerifier([cert_pem], topic_arns=[TOPIC])
    verifier.verify({}, sns(sns_message(rsa_key)), URL, NOW)
    verifier.verify({}, sns(sns_message(rsa_key, version="1")), URL, NOW)
    verifier.verify({}, sns(sns_message(rsa_key, subject=None)), URL, NOW)  # no Subject: not in the canonical string


def test_sns_accepts_subscription_and_unsubscribe_confirmations(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    verifier = SnsVerifier({CERT_URL: cert_pem}, topic_arns=[TOPIC])
    verifier.verify({}, sns(sns_message(rsa_key, kind="SubscriptionConfirmation")), URL, NOW)
    verifier.verify({}, sns(sns_message(rsa_key, kind="UnsubscribeConfirmation")), URL, NOW)


def test_sns_refuses_altered_signed_fields(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    verifier = SnsVerifier([cert_pem], topic_arns=[TOPIC, "arn:aws:sns:eu-west-1:123456789012:other"])
    good = sns_message(rsa_key)
    for field, value in (("Message", '{"eventType":"Bounce"}'), ("Subject", "x"), ("MessageId", "other"),
                         ("Timestamp", sns_iso(NOW + 1)), ("TopicArn", "arn:aws:sns:eu-west-1:123456789012:other")):  # fmt: skip
        refused(lambda f=field, v=value: verifier.verify({}, sns({**good, f: v}), URL, NOW), "signature mismatch")  # type: ignore[misc]
    refused(lambda: verifier.verify({}, sns({k: v for k, v in good.items() if k != "Subject"}), URL, NOW), "signature mismatch")
    confirmation = sns_message(rsa_key, kind="SubscriptionConfirmation")
    tampered = {**confirmation, "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=evil"}
    refused(lambda: verifier.verify({}, sns(tampered), URL, NOW), "signature mismatch")
    refused(lambda: verifier.verify({}, sns({**good, "SignatureVersion": "1"}), URL, NOW), "signature mismatch")


def test_sns_refuses_a_signature_by_a_key_outside_the_trust_store(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(lambda: SnsVerifier([cert_pem], topic_arns=[TOPIC]).verify({}, sns(sns_message(other)), URL, NOW), "signature mismatch")
    store = {CERT_URL.replace("0000", "1111"): cert_pem}  # the right certificate, filed under another URL
    refused(lambda: SnsVerifier(store, topic_arns=[TOPIC]).verify({}, sns(sns_message(rsa_key)), URL, NOW), "not in the trust store")


@pytest.mark.parametrize("cert_url", [
    "http://sns.eu-west-1.amazonaws.com/cert.pem", "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem", "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/cert.pem", "https://s3.eu-west-1.amazonaws.com/cert.pem", "",
])  # fmt: skip
def test_sns_refuses_a_signing_cert_url_off_the_sns_hosts(rsa_key: rsa.RSAPrivateKey, cert_pem: str, cert_url: str) -> None:
    message = sns_message(rsa_key, SigningCertURL=cert_url)
    refused(lambda: SnsVerifier([cert_pem], topic_arns=[TOPIC]).verify({}, sns(message), URL, NOW), "SigningCertURL")
    assert not is_sns_url(cert_url)


def test_sns_cert_urls_of_every_region_and_the_china_partition_are_sns_urls() -> None:
    assert is_sns_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
    assert is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem")


def test_sns_refuses_another_topic_even_signed_by_sns(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    message = sns_message(rsa_key, TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-elses")
    refused(lambda: SnsVerifier([cert_pem], topic_arns=[TOPIC]).verify({}, sns(message), URL, NOW), "topic not allowed")


def test_sns_refuses_stale_and_future_timestamps(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    verifier = SnsVerifier([cert_pem], topic_arns=[TOPIC])
    verifier.verify({}, sns(sns_message(rsa_key, at=NOW - DEFAULT_TOLERANCE)), URL, NOW)
    refused(lambda: verifier.verify({}, sns(sns_message(rsa_key, at=NOW - DEFAULT_TOLERANCE - 1)), URL, NOW), "too old")
    refused(lambda: verifier.verify({}, sns(sns_message(rsa_key, at=NOW + DEFAULT_TOLERANCE + 1)), URL, NOW), "too new")
    refused(lambda: verifier.verify({}, sns(sns_message(rsa_key, Timestamp="yesterday")), URL, NOW), "ISO 8601")


def test_sns_refuses_a_certificate_outside_its_validity(rsa_key: rsa.RSAPrivateKey) -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    expired = make_cert(rsa_key, now - timedelta(days=60), now - timedelta(days=1))
    refused(lambda: SnsVerifier([expired], topic_arns=[TOPIC]).verify({}, sns(sns_message(rsa_key)), URL, NOW), "not valid now")


def test_sns_refuses_missing_or_unknown_fields(rsa_key: rsa.RSAPrivateKey, cert_pem: str) -> None:
    verifier, good = SnsVerifier([cert_pem], topic_arns=[TOPIC]), sns_message(rsa_key)
    for field, reason in (("Signature", "missing Signature"), ("Message", "missing Message"), ("SigningCertURL", "SigningCertURL"),
                          ("Timestamp", "missing Timestamp"), ("Type", "unknown SNS message type"),
                          ("SignatureVersion", "unsupported SignatureVersion"), ("TopicArn", "topic not allowed")):  # fmt: skip
        refused(lambda f=field: verifier.verify({}, sns({k: v for k, v in good.items() if k != f}), URL, NOW), reason)  # type: ignore[misc]
    refused(lambda: verifier.verify({}, sns({**good, "SignatureVersion": "3"}), URL, NOW), "unsupported SignatureVersion")
    refused(lambda: verifier.verify({}, sns({**good, "Type": ["Notification"]}), URL, NOW), "unknown SNS message type")
    refused(lambda: verifier.verify({}, sns({**good, "Signature": "@@"}), URL, NOW), "not base64")
    refused(lambda: verifier.verify({}, b"<xml/>", URL, NOW), "not JSON")


def test_sns_configuration_is_checked(cert_pem: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        SnsVerifier([cert_pem], topic_arns=[])
    with pytest.raises(ValueError, match="empty"):
        SnsVerifier([], topic_arns=[TOPIC])
    with pytest.raises(ValueError, match="PEM"):
        SnsVerifier(["not a certificate"], topic_arns=[TOPIC])
    with pytest.raises(ValueError, match="not one string"):
        SnsVerifier(cert_pem, topic_arns=[TOPIC])
    with pytest.raises(ValueError, match="SNS certificate URL"):
        SnsVerifier({"https://example.com/cert.pem": cert_pem}, topic_arns=[TOPIC])


# --- Postmark -----------------------------------------------------------------------------------

PM_USER, PM_PASSWORD = "postmark-hook", "s3cret-pw-9d2"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_postmark_accepts_the_configured_basic_credentials_in_any_header_case() -> None:
    verifier = PostmarkVerifier(PM_USER, PM_PASSWORD)
    verifier.verify(basic(PM_USER, PM_PASSWORD), b"{}", URL, NOW)
    verifier.verify({"authorization": basic(PM_USER, PM_PASSWORD)["Authorization"].replace("Basic", "basic")}, b"{}", URL, NOW)


def test_postmark_refuses_wrong_or_missing_credentials() -> None:
    verifier = PostmarkVerifier(PM_USER, PM_PASSWORD)
    refused(lambda: verifier.verify(basic(PM_USER, PM_PASSWORD + "x"), b"{}", URL, NOW), "wrong credentials")
    refused(lambda: verifier.verify(basic("someone", PM_PASSWORD), b"{}", URL, NOW), "wrong credentials")
    refused(lambda: verifier.verify(basic(PM_USER, ""), b"{}", URL, NOW), "wrong credentials")
    refused(lambda: PostmarkVerifier(PM_USER, "another").verify(basic(PM_USER, PM_PASSWORD), b"{}", URL, NOW), "wrong credentials")
    refused(lambda: verifier.verify({}, b"{}", URL, NOW), "missing Authorization")
    refused(lambda: verifier.verify({"Authorization": "Bearer abc"}, b"{}", URL, NOW), "not basic")
    refused(lambda: verifier.verify({"Authorization": "Basic ***"}, b"{}", URL, NOW), "not base64")


def test_postmark_signs_nothing_so_body_and_time_do_not_matter() -> None:
    """Postmark documents basic auth only: there is no body signature and no timestamp to check."""
    verifier = PostmarkVerifier(PM_USER, PM_PASSWORD)
    for body, now in ((b'{"RecordType":"Bounce"}', 0.0), (b"anything", NOW * 2)):
        verifier.verify(basic(PM_USER, PM_PASSWORD), body, URL, now)


# --- Standard Webhooks --------------------------------------------------------------------------

# the vector of the spec's reference library (standard-webhooks, libraries/python/tests/test_webhooks.py)
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID, SW_TIMESTAMP, SW_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_NOW = 1614265330.0


def sw_headers(signature: str = SW_SIGNATURE, msg_id: str = SW_ID, timestamp: str = SW_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def sw_sign(body: bytes, timestamp: int, secret: str = SW_SECRET, msg_id: str = SW_ID) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return sw_headers("v1," + base64.b64encode(digest).decode(), msg_id, str(timestamp))


def test_standard_webhooks_accepts_the_published_vector() -> None:
    StandardWebhooksVerifier(SW_SECRET).verify(sw_headers(), SW_BODY, URL, SW_NOW)
    StandardWebhooksVerifier(SW_SECRET.removeprefix("whsec_")).verify(sw_headers(), SW_BODY, URL, SW_NOW)  # as the library allows
    upper = {k.upper(): v for k, v in sw_headers().items()}
    StandardWebhooksVerifier(SW_SECRET).verify(upper, SW_BODY, URL, SW_NOW)


def test_standard_webhooks_accepts_any_matching_v1_in_the_list() -> None:
    junk = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    listed = f"{junk} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,@@@ {SW_SIGNATURE} {junk}"
    StandardWebhooksVerifier(SW_SECRET).verify(sw_headers(listed), SW_BODY, URL, SW_NOW)


def test_standard_webhooks_refuses_the_published_invalid_signature_and_other_versions() -> None:
    verifier = StandardWebhooksVerifier(SW_SECRET)
    bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # the reference tests' invalid signature
    refused(lambda: verifier.verify(sw_headers(bad), SW_BODY, URL, SW_NOW), "no matching signature")
    refused(lambda: verifier.verify(sw_headers(SW_SIGNATURE.replace("v1,", "v2,")), SW_BODY, URL, SW_NOW), "no matching")
    refused(lambda: verifier.verify(sw_headers(SW_SIGNATURE.replace("v1,", "v1a,")), SW_BODY, URL, SW_NOW), "no matching")


def test_standard_webhooks_refuses_altered_body_id_or_timestamp_and_a_wrong_key() -> None:
    verifier = StandardWebhooksVerifier(SW_SECRET)
    refused(lambda: verifier.verify(sw_headers(), b'{"test": 2432232315}', URL, SW_NOW), "no matching signature")
    refused(lambda: verifier.verify(sw_headers(msg_id="msg_other"), SW_BODY, URL, SW_NOW), "no matching signature")
    refused(lambda: verifier.verify(sw_headers(timestamp="1614265331"), SW_BODY, URL, SW_NOW), "no matching signature")
    other = "whsec_" + base64.b64encode(b"another secret of 24 bytes").decode()
    refused(lambda: StandardWebhooksVerifier(other).verify(sw_headers(), SW_BODY, URL, SW_NOW), "no matching signature")


def test_standard_webhooks_refuses_missing_headers() -> None:
    verifier = StandardWebhooksVerifier(SW_SECRET)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = {k: v for k, v in sw_headers().items() if k != name}
        refused(lambda headers=headers: verifier.verify(headers, SW_BODY, URL, SW_NOW), f"missing {name}")  # type: ignore[misc]
    refused(lambda: verifier.verify(sw_headers(timestamp="hello"), SW_BODY, URL, SW_NOW), "Unix time")


def test_standard_webhooks_refuses_stale_and_future_timestamps() -> None:
    verifier = StandardWebhooksVerifier(SW_SECRET)
    refused(lambda: verifier.verify(sw_headers(), SW_BODY, URL, SW_NOW + DEFAULT_TOLERANCE + 1), "too old")
    refused(lambda: verifier.verify(sw_headers(), SW_BODY, URL, SW_NOW - DEFAULT_TOLERANCE - 1), "too new")
    fresh = sw_sign(SW_BODY, int(NOW))
    verifier.verify(fresh, SW_BODY, URL, NOW)
    refused(lambda: verifier.verify(sw_sign(SW_BODY, int(NOW) - 301), SW_BODY, URL, NOW), "too old")
    refused(lambda: verifier.verify(sw_sign(SW_BODY, int(NOW) + 301), SW_BODY, URL, NOW), "too new")


def test_standard_webhooks_refuses_a_secret_that_is_not_base64() -> None:
    with pytest.raises(ValueError, match="base64"):
        StandardWebhooksVerifier("whsec_not*base64")
    with pytest.raises(ValueError, match="empty"):
        StandardWebhooksVerifier("whsec_")


# --- Twilio -------------------------------------------------------------------------------------

# Twilio's "Webhooks security" example: its auth token, URL and POST parameters, and signature;
# and the same example as Twilio's helper libraries' docs give it with other phone numbers
TW_TOKEN, TW_URL = "12345", "https://mycompany.com/myapp.php?foo=1&bar=2"
TW_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030", "To": "+18005551212"}
TW_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
TW_OLDER = ({**TW_PARAMS, "Caller": "+14158675309", "From": "+14158675309"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def tw_form(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


def tw_sign(url: str, params: dict[str, str], token: str = TW_TOKEN) -> dict[str, str]:
    text = url + "".join(k + v for k, v in sorted(params.items()))
    return {"X-Twilio-Signature": base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()}


def test_twilio_accepts_its_published_examples() -> None:
    verifier = TwilioVerifier(TW_TOKEN)
    verifier.verify({"X-Twilio-Signature": TW_SIGNATURE}, tw_form(TW_PARAMS), TW_URL, NOW)
    verifier.verify({"x-twilio-signature": TW_OLDER[1]}, tw_form(TW_OLDER[0]), TW_URL, NOW)
    reordered = dict(reversed(list(TW_PARAMS.items())))  # the form's order does not matter: the names are sorted
    verifier.verify({"X-Twilio-Signature": TW_SIGNATURE}, tw_form(reordered), TW_URL, NOW)


def test_twilio_refuses_an_altered_form_or_url_and_a_wrong_token() -> None:
    verifier, headers = TwilioVerifier(TW_TOKEN), {"X-Twilio-Signature": TW_SIGNATURE}
    refused(lambda: verifier.verify(headers, tw_form({**TW_PARAMS, "Digits": "1235"}), TW_URL, NOW), "signature mismatch")
    refused(lambda: verifier.verify(headers, tw_form({**TW_PARAMS, "Extra": ""}), TW_URL, NOW), "signature mismatch")
    refused(lambda: verifier.verify(headers, tw_form(TW_PARAMS), TW_URL.replace("foo=1", "foo=2"), NOW), "signature mismatch")
    refused(lambda: verifier.verify(headers, tw_form(TW_PARAMS), TW_URL.replace("https", "http"), NOW), "signature mismatch")
    refused(lambda: TwilioVerifier("54321").verify(headers, tw_form(TW_PARAMS), TW_URL, NOW), "signature mismatch")
    refused(lambda: verifier.verify({}, tw_form(TW_PARAMS), TW_URL, NOW), "missing X-Twilio-Signature")
    refused(lambda: verifier.verify({"X-Twilio-Signature": "!!"}, tw_form(TW_PARAMS), TW_URL, NOW), "not base64")
    refused(lambda: verifier.verify(headers, b"\xff\xfe", TW_URL, NOW), "not form-encoded")


def test_twilio_tries_the_url_with_and_without_the_default_port() -> None:
    verifier = TwilioVerifier(TW_TOKEN)
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    verifier.verify(tw_sign(with_port, TW_PARAMS), tw_form(TW_PARAMS), TW_URL, NOW)
    verifier.verify({"X-Twilio-Signature": TW_SIGNATURE}, tw_form(TW_PARAMS), with_port, NOW)
    other_port = "https://mycompany.com:8443/myapp.php?foo=1&bar=2"
    refused(lambda: verifier.verify({"X-Twilio-Signature": TW_SIGNATURE}, tw_form(TW_PARAMS), other_port, NOW), "signature mismatch")


def test_twilio_json_bodies_are_bound_by_body_sha256() -> None:
    body = b'{"CallSid":"CA1"}'
    url = f"https://dee.example.com/twilio?bodySHA256={hashlib.sha256(body).hexdigest()}"
    verifier = TwilioVerifier(TW_TOKEN)
    verifier.verify(tw_sign(url, {}), body, url, NOW)
    refused(lambda: verifier.verify(tw_sign(url, {}), b'{"CallSid":"CA2"}', url, NOW), "bodySHA256")
    refused(lambda: TwilioVerifier("other").verify(tw_sign(url, {}), body, url, NOW), "signature mismatch")


def test_twilio_checks_the_signed_timestamp_of_status_callbacks_when_asked() -> None:
    def status(at: float) -> dict[str, str]:
        return {"CallSid": "CA1", "CallStatus": "completed", "Timestamp": format_datetime(datetime.fromtimestamp(at, UTC))}

    strict, lenient = TwilioVerifier(TW_TOKEN, tolerance=DEFAULT_TOLERANCE), TwilioVerifier(TW_TOKEN)
    fresh, old, new = status(NOW - 10), status(NOW - DEFAULT_TOLERANCE - 1), status(NOW + DEFAULT_TOLERANCE + 1)
    strict.verify(tw_sign(URL, fresh), tw_form(fresh), URL, NOW)
    refused(lambda: strict.verify(tw_sign(URL, old), tw_form(old), URL, NOW), "too old")
    refused(lambda: strict.verify(tw_sign(URL, new), tw_form(new), URL, NOW), "too new")
    refused(lambda: strict.verify(tw_sign(URL, TW_PARAMS), tw_form(TW_PARAMS), URL, NOW), "missing Timestamp")
    garbled = {**fresh, "Timestamp": "soon"}
    refused(lambda: strict.verify(tw_sign(URL, garbled), tw_form(garbled), URL, NOW), "not a date")
    lenient.verify(tw_sign(URL, old), tw_form(old), URL, NOW)  # off by default: Twilio signs no delivery time
    refused(lambda: strict.verify(tw_sign(URL, old), tw_form({**old, "Timestamp": fresh["Timestamp"]}), URL, NOW), "mismatch")


# --- what every verifier shares -----------------------------------------------------------------

TW_OWN_TOKEN = "tw-auth-token-5e1f"  # the published example's "12345" is too short to search for
SECRETS = (MG_KEY, PM_PASSWORD, SW_SECRET, SW_SECRET.removeprefix("whsec_"), TW_OWN_TOKEN)


def test_no_secret_or_signature_is_in_reprs_or_refusals(ec_key: ec.EllipticCurvePrivateKey, cert_pem: str) -> None:
    verifiers: list[Any] = [
        SendGridVerifier(spki_b64(ec_key)), MailgunVerifier(MG_KEY), SnsVerifier([cert_pem], topic_arns=[TOPIC]),
        PostmarkVerifier(PM_USER, PM_PASSWORD), StandardWebhooksVerifier(SW_SECRET), TwilioVerifier(TW_OWN_TOKEN),
    ]  # fmt: skip
    texts = [repr(v) for v in verifiers]
    texts.append(str(refused(lambda: verifiers[0].verify(sg_headers(), SG_PAYLOAD, URL, SG_NOW))))
    texts.append(str(refused(lambda: MailgunVerifier("k2").verify({}, mg_body(), URL, NOW))))
    texts.append(str(refused(lambda: verifiers[3].verify(basic(PM_USER, "nope"), b"", URL, NOW))))
    texts.append(str(refused(lambda: verifiers[4].verify(sw_headers(), b"x", URL, SW_NOW))))
    texts.append(str(refused(lambda: verifiers[5].verify({"X-Twilio-Signature": TW_SIGNATURE}, b"a=b", TW_URL, NOW))))
    given = json.loads(mg_body())["signature"]["signature"]
    for text in texts:
        assert all(secret not in text for secret in SECRETS), text
        assert SG_SIGNATURE not in text and TW_SIGNATURE not in text and given not in text, text
    assert isinstance(refused(lambda: verifiers[3].verify({}, b"", URL, NOW)), ValueError)  # a ValueError, as the ingress expects


def test_tolerances_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        StandardWebhooksVerifier(SW_SECRET, tolerance=0)
    with pytest.raises(ValueError, match="tolerance"):
        TwilioVerifier(TW_TOKEN, tolerance=-1)
