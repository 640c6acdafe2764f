"""Providers' signatures made as each provider documents them, with keys made here, for requests to
a running ingress (the unit tests of `dee.ingress.signatures` build theirs the same way): SendGrid
ECDSA P-256, Mailgun HMAC, SNS RSA with a self-signed certificate in a trust store on disk,
Postmark basic auth, Standard Webhooks HMAC and Twilio's `X-Twilio-Signature`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

SNS_CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
SNS_TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
MAILGUN_KEY = "mg-webhook-signing-key-5b1e"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hook", "pm-s3cret-77"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"a standard webhooks secret!!").decode()


def now() -> int:
    return int(time.time())


@dataclass
class Signer:
    """Every provider's keys, made once per test deployment."""

    sendgrid: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    sns: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    # --- the ingress's configuration for these keys ---------------------------------------------

    def ingress_config(self, directory: Path) -> dict[str, Any]:
        """`IngressConfig` fields for every provider, the SNS trust store written to `directory`."""
        der = self.sendgrid.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        store = directory / "sns-certificates.pem"
        store.write_text(self.sns_certificate())
        return {
            "sendgrid_public_key": base64.b64encode(der).decode(), "mailgun_signing_key": MAILGUN_KEY,
            "ses_certificates": (str(store),), "ses_topic_arns": (SNS_TOPIC,), "postmark_username": POSTMARK_USER,
            "postmark_password": POSTMARK_PASSWORD, "standard_webhooks_secret": STANDARD_SECRET,
        }  # fmt: skip

    def sns_certificate(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        today = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.sns.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(today - timedelta(days=1))
                .not_valid_after(today + timedelta(days=1)).sign(self.sns, hashes.SHA256()))  # fmt: skip
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # --- SendGrid: ECDSA over the timestamp header's text and the raw body ----------------------

    def sendgrid_headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(now() if timestamp is None else timestamp)
        signature = self.sendgrid.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp}  # fmt: skip

    # --- SNS: RSA PKCS#1 v1.5 over the canonical string, SignatureVersion 2 (SHA-256) ----------

    def sns_message(self, kind: str = "Notification", message: str = "{}", at: float | None = None, key: rsa.RSAPrivateKey | None = None,
                    **fields: str) -> dict[str, Any]:  # fmt: skip
        moment = datetime.fromtimestamp(now() if at is None else at, UTC)
        document: dict[str, Any] = {
            "Type": kind, "MessageId": fields.pop("MessageId", secrets.token_hex(16)), "TopicArn": SNS_TOPIC, "Message": message,
            "Timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "SignatureVersion": "2",
            "SigningCertURL": SNS_CERT_URL,
        }  # fmt: skip
        if kind == "Notification":
            document["Subject"] = "Amazon SES Email Event Notification"
            signed: tuple[str, ...] = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        else:
            document.update(Token=secrets.token_hex(32))
            signed = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        document.update(fields)
        canonical = "".join(f"{name}\n{document[name]}\n" for name in signed if name in document).encode()
        signature = (key or self.sns).sign(canonical, padding.PKCS1v15(), hashes.SHA256())
        document["Signature"] = base64.b64encode(signature).decode()
        return document


# --- Mailgun: hex HMAC-SHA256 of timestamp + token, in the body ---------------------------------


def mailgun_body(event: dict[str, Any], token: str | None = None, timestamp: int | None = None, key: str = MAILGUN_KEY) -> bytes:
    stamp = str(now() if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}).encode()


# --- Postmark: HTTP basic auth ------------------------------------------------------------------


def postmark_headers(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- Standard Webhooks: HMAC-SHA256 of id.timestamp.body, base64 --------------------------------


def standard_headers(body: bytes, msg_id: str, timestamp: int | None = None, secret: str = STANDARD_SECRET) -> dict[str, str]:
    stamp = str(now() if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}  # fmt: skip


# --- Twilio: base64 HMAC-SHA1 of the full URL and the sorted POST parameters --------------------


def twilio_signature(url: str, params: dict[str, str], token: str) -> str:
    text = url + "".join(name + value for name, value in sorted(params.items()))
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()
