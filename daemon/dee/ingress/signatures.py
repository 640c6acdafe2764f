"""Authenticity of providers' webhook requests: one verifier per provider, exactly as it documents
its signature, and nothing else.

Each verifier is built from its configuration (keys, a trust store, a tolerance) and has one
method, `verify(headers, body, url, now)`, that returns None for an authentic request and raises
`SignatureError` for any other. It is pure: no clock (`now` is passed in), no network (a key a
provider would have us download comes from configuration), no state but the Mailgun verifier's
replay cache, which lives in the instance. Header names match case-insensitively. Where the
provider signs a timestamp, a request older or newer than `tolerance` seconds (5 minutes unless
configured) is refused: it is a replay, or a clock too far off to trust.

`SignatureError` messages are short, fixed reasons ("signature mismatch", "missing header ..."):
never a key, a password, a token or the signature itself, and the verifiers' reprs show their
settings, not their secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, parse_qsl, urlsplit

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from dee.plugin.webhooks import SignatureError as SignatureError  # shared with plugins' receivers

DEFAULT_TOLERANCE = 300.0  # seconds either side of `now` a signed timestamp may be


class UnreadableBody(SignatureError):
    """A body that is not JSON at all, where the signature is inside it (Mailgun, SNS): nothing in
    it can be authentic, and the ingress answers it as the malformed request it is (400), not as
    a forgery."""


class Verifier(Protocol):
    """What the ingress calls: None for an authentic request, `SignatureError` for any other."""

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None: ...


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _header(headers: Mapping[str, str], name: str) -> str:
    """The value of a header (from `_lowered` headers); a missing or empty one is refused."""
    value = headers.get(name.lower(), "").strip()
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def _unix_seconds(text: str, what: str) -> int:
    """A decimal Unix time as the providers send it (digits only: no sign, no fraction)."""
    if not (text.isascii() and text.isdigit()):
        raise SignatureError(f"{what} is not a Unix time")
    return int(text)


def _check_fresh(signed_at: float, now: float, tolerance: float) -> None:
    if signed_at < now - tolerance:
        raise SignatureError("timestamp too old")
    if signed_at > now + tolerance:
        raise SignatureError("timestamp too new")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64") from None


def _positive(tolerance: float) -> float:
    if not tolerance > 0:
        raise ValueError("tolerance must be a positive number of seconds")
    return float(tolerance)


class SendGridVerifier:
    """SendGrid's Signed Event Webhook: ECDSA (P-256, SHA-256) over the timestamp header's text
    followed by the raw body, the signature a base64 DER `Ecdsa-Sig-Value`.

    Documented in "Getting Started with the Event Webhook Security Features" (Twilio SendGrid
    docs, `X-Twilio-Email-Event-Webhook-Signature` / `-Timestamp`); the verification key is the
    one SendGrid shows under Mail Settings > Event Webhook: base64 of the DER SubjectPublicKeyInfo
    (a PEM block is accepted too). The body must be the bytes received, untouched (SendGrid's own
    sample payload ends in CRLF, and the signature covers it).
    """

    __slots__ = ("_key", "tolerance")

    SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
    TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

    def __init__(self, public_key: str, *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        text = public_key.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode())
            else:
                key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("the SendGrid verification key is not a base64 DER or PEM public key") from None
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            raise ValueError("the SendGrid verification key is not a P-256 (prime256v1) key")
        self._key = key
        self.tolerance = _positive(tolerance)

    def __repr__(self) -> str:
        return f"SendGridVerifier(tolerance={self.tolerance})"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        h = _lowered(headers)
        signature = _b64(_header(h, self.SIGNATURE_HEADER), "signature")
        timestamp = _header(h, self.TIMESTAMP_HEADER)
        _check_fresh(_unix_seconds(timestamp, "timestamp"), now, self.tolerance)
        try:
            self._key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # ValueError: not a DER signature at all
            raise SignatureError("signature mismatch") from None


class MailgunVerifier:
    """Mailgun webhooks: the JSON body carries `signature: {timestamp, token, signature}`, the last
    the hex HMAC-SHA256, keyed by the webhook signing key, of `timestamp + token` (Mailgun docs,
    "Securing Webhooks").

    What Mailgun signs is only that pair, not `event-data`: the signature proves the request came
    from Mailgun, not that the event in it is the one Mailgun sent. The docs suggest caching tokens
    to refuse replays and checking the timestamp is recent; both are done here. Seen tokens are
    kept until their timestamp leaves the tolerance window (a request that old is refused anyway),
    at most `max_tokens` of them (past that the oldest are dropped first).
    """

    __slots__ = ("_key", "_seen", "max_tokens", "tolerance")

    def __init__(self, signing_key: str, *, tolerance: float = DEFAULT_TOLERANCE, max_tokens: int = 100_000) -> None:
        if not signing_key:
            raise ValueError("the Mailgun webhook signing key is empty")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self._key = signing_key.encode()
        self.tolerance = _positive(tolerance)
        self.max_tokens = max_tokens
        self._seen: OrderedDict[str, float] = OrderedDict()  # token -> when it can be forgotten

    def __repr__(self) -> str:
        return f"MailgunVerifier(tolerance={self.tolerance}, max_tokens={self.max_tokens})"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise UnreadableBody("body is not JSON") from None
        signed = document.get("signature") if isinstance(document, dict) else None
        if not isinstance(signed, dict):
            raise SignatureError("missing signature object")
        timestamp, token, signature = signed.get("timestamp"), signed.get("token"), signed.get("signature")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)  # the docs' table says int; their examples send a string
        if not (isinstance(timestamp, str) and isinstance(token, str) and token and isinstance(signature, str) and signature):
            raise SignatureError("incomplete signature object")
        signed_at = _unix_seconds(timestamp, "timestamp")
        _check_fresh(signed_at, now, self.tolerance)
        expected = hmac.new(self._key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise SignatureError("signature mismatch")
        self._forget(now)
        if token in self._seen:
            raise SignatureError("token already used")
        self._seen[token] = signed_at + self.tolerance
        while len(self._seen) > self.max_tokens:
            self._seen.popitem(last=False)

    def _forget(self, now: float) -> None:
        """Drops tokens whose requests would now be refused as too old (from the oldest on)."""
        while self._seen:
            token, expires = next(iter(self._seen.items()))
            if expires >= now:
                return
            del self._seen[token]


# SNS's signing-certificate hosts (AWS's own validators accept the China partition's `.com.cn`)
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_SNS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def is_sns_url(url: str) -> bool:
    """Whether a URL is https on an SNS endpoint host (`sns.<region>.amazonaws.com`), with no
    credentials or port in it: where SNS signing certificates and subscribe links live."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = parts.hostname or ""
    return parts.scheme == "https" and parts.netloc == host and _SNS_HOST.fullmatch(host) is not None


class SnsVerifier:
    """Amazon SNS message signatures (how SES bounce, complaint, delivery and engagement events
    arrive over HTTPS): RSA PKCS#1 v1.5 over a canonical string of the message's fields, SHA-256
    for `SignatureVersion` 2 and SHA-1 for version 1 (SNS Developer Guide, "Verifying the
    signatures of Amazon SNS messages").

    The canonical string is `Key\\nValue\\n` for each signed field in byte order of the names:
    for a `Notification` Message, MessageId, Subject (only when the message has one), Timestamp,
    TopicArn, Type; for a `SubscriptionConfirmation` or `UnsubscribeConfirmation` Message,
    MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type.

    SNS would have the receiver download the certificate at `SigningCertURL`; here nothing is
    fetched. The URL must be https on an `sns.<region>.amazonaws.com` host and its certificate must
    be in the configured trust store: a list of PEM certificates (the signature must verify with
    one of them) or a mapping from `SigningCertURL` to PEM (it must verify with that one). A
    certificate outside its validity period at `now` is not used.

    SNS signs with the same certificate for every AWS account of a region, so a valid signature
    proves only that SNS sent the message: `topic_arns` lists the topics this endpoint accepts, and
    a message of any other topic is refused. The signed `Timestamp` is the publication time and
    redeliveries keep it: raise `tolerance` if the topic's delivery policy retries for longer.
    """

    __slots__ = ("_by_url", "_certificates", "tolerance", "topic_arns")

    def __init__(self, certificates: Sequence[str] | Mapping[str, str], *, topic_arns: Iterable[str],
                 tolerance: float = DEFAULT_TOLERANCE) -> None:  # fmt: skip
        self._by_url: dict[str, x509.Certificate] | None = None
        self._certificates: tuple[x509.Certificate, ...] = ()
        if isinstance(certificates, Mapping):
            for url in certificates:
                if not is_sns_url(url):
                    raise ValueError(f"trust store URL {url!r} is not an https SNS certificate URL")
            self._by_url = {url: _certificate(pem) for url, pem in certificates.items()}
        elif isinstance(certificates, str):
            raise ValueError("the SNS trust store is a list of PEM certificates or a mapping, not one string")
        else:
            self._certificates = tuple(_certificate(pem) for pem in certificates)
        if not (self._by_url or self._certificates):
            raise ValueError("the SNS trust store is empty")
        self.topic_arns = frozenset(topic_arns)
        if not self.topic_arns:
            raise ValueError("no SNS topic ARN is allowed")
        self.tolerance = _positive(tolerance)

    def __repr__(self) -> str:
        size = len(self._by_url) if self._by_url is not None else len(self._certificates)
        return f"SnsVerifier(certificates={size}, topic_arns={sorted(self.topic_arns)!r}, tolerance={self.tolerance})"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise UnreadableBody("body is not JSON") from None
        if not isinstance(document, dict):
            raise SignatureError("body is not an SNS message")
        kind, version, topic = (_text(document, name) for name in ("Type", "SignatureVersion", "TopicArn"))
        fields = _SNS_SIGNED_FIELDS.get(kind)
        if fields is None:
            raise SignatureError("unknown SNS message type")
        algorithm = _SNS_HASHES.get(version)
        if algorithm is None:
            raise SignatureError("unsupported SignatureVersion")
        if topic not in self.topic_arns:
            raise SignatureError("topic not allowed")
        _check_fresh(_iso_seconds(document.get("Timestamp")), now, self.tolerance)
        cert_url = document.get("SigningCertURL")
        if not (isinstance(cert_url, str) and is_sns_url(cert_url)):
            raise SignatureError("SigningCertURL is not an https SNS URL")
        if self._by_url is not None:
            if cert_url not in self._by_url:
                raise SignatureError("signing certificate not in the trust store")
            candidates: Iterable[x509.Certificate] = (self._by_url[cert_url],)
        else:
            candidates = self._certificates
        signature = document.get("Signature")
        if not isinstance(signature, str):
            raise SignatureError("missing Signature")
        raw = _b64(signature, "Signature")
        canonical = _sns_canonical(document, fields)
        current = [c for c in candidates if c.not_valid_before_utc.timestamp() <= now <= c.not_valid_after_utc.timestamp()]
        if not current:
            raise SignatureError("signing certificate not valid now")
        for certificate in current:
            key = certificate.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                continue
            try:
                key.verify(raw, canonical, padding.PKCS1v15(), algorithm())
                return
            except InvalidSignature:
                continue
        raise SignatureError("signature mismatch")


def _text(document: Mapping[str, Any], name: str) -> str:
    """A field's value if it is a string, else "" (which no lookup matches)."""
    value = document.get(name)
    return value if isinstance(value, str) else ""


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise ValueError("an SNS trust store entry is not a PEM certificate") from None


def _iso_seconds(value: Any) -> float:
    if not isinstance(value, str):
        raise SignatureError("missing Timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SignatureError("Timestamp is not ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _sns_canonical(document: Mapping[str, Any], fields: Sequence[str]) -> bytes:
    parts: list[str] = []
    for name in fields:
        value = document.get(name)
        if value is None and name == "Subject":
            continue  # signed only when the notification has one
        if not isinstance(value, str):
            raise SignatureError(f"missing {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


class PostmarkVerifier:
    """Postmark webhooks: Postmark signs nothing; it sends HTTP basic auth credentials put in the
    webhook URL (`https://user:password@host/...`, Postmark docs "Webhooks overview", security
    section), checked here against the configured pair in constant time. Nothing dates the request,
    so there is no freshness check: replays are the ingress's deterministic event ids' business.
    """

    __slots__ = ("_expected",)

    def __init__(self, username: str, password: str) -> None:
        if not (username and password):
            raise ValueError("the Postmark webhook user and password must both be set")
        if ":" in username:
            raise ValueError("a basic auth user name cannot contain ':'")
        self._expected = hashlib.sha256(f"{username}:{password}".encode()).digest()

    def __repr__(self) -> str:
        return "PostmarkVerifier()"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        scheme, _, credentials = _header(_lowered(headers), "Authorization").partition(" ")
        if scheme.lower() != "basic":
            raise SignatureError("not basic authorization")
        given = _b64(credentials.strip(), "basic credentials")
        # hashed first so that the comparison takes the same time whatever the lengths
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self._expected):
            raise SignatureError("wrong credentials")


class StandardWebhooksVerifier:
    """Standard Webhooks (https://www.standardwebhooks.com, spec "Verifying webhook authenticity"):
    HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64 after the
    secret's `whsec_` prefix. `webhook-signature` is a space-separated list of `version,base64`
    entries (several during a key rotation); the request is authentic when any `v1` entry matches.
    Other versions (`v1a`, the asymmetric ed25519 scheme) are ignored.
    """

    __slots__ = ("_key", "tolerance")

    PREFIX = "whsec_"

    def __init__(self, secret: str, *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        text = secret.removeprefix(self.PREFIX)
        try:  # padding restored as the reference libraries do (some secrets are shown unpadded)
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the Standard Webhooks secret is not whsec_ followed by base64") from None
        if not key:
            raise ValueError("the Standard Webhooks secret is empty")
        self._key = key
        self.tolerance = _positive(tolerance)

    def __repr__(self) -> str:
        return f"StandardWebhooksVerifier(tolerance={self.tolerance})"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        h = _lowered(headers)
        msg_id = _header(h, "webhook-id")
        timestamp = _header(h, "webhook-timestamp")
        listed = _header(h, "webhook-signature")
        _check_fresh(_unix_seconds(timestamp, "webhook-timestamp"), now, self.tolerance)
        expected = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        for entry in listed.split():
            version, _, value = entry.partition(",")
            if version != "v1":
                continue
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(expected, given):
                return
        raise SignatureError("no matching signature")


_DEFAULT_PORTS = {"https": 443, "http": 80}


class TwilioVerifier:
    """Twilio's `X-Twilio-Signature` (Twilio docs, "Webhooks security"): base64 HMAC-SHA1, keyed by
    the account's auth token, of the full URL Twilio requested (scheme, host, path and query string,
    as configured in the callback, so `url` must be the public URL, not the one behind a proxy)
    followed, for a form POST, by every parameter's name and value sorted by name (code point
    order), with no delimiters.

    For a JSON body Twilio adds `bodySHA256` (the hex SHA-256 of the body) to the query and signs
    the URL alone; that form is checked too. As Twilio's helper libraries do, the URL is also tried
    with the scheme's default port added or removed (Twilio may sign either).

    Twilio signs no delivery time. A status callback's form does carry `Timestamp`, the time of the
    call event it reports, and it is signed: with `tolerance` set, a request whose `Timestamp` is
    missing or further than that from `now` is refused. Off by default: a delayed but genuine final
    status is worth more than refusing a replay, which the deterministic event id makes harmless.
    """

    __slots__ = ("_token", "tolerance")

    HEADER = "X-Twilio-Signature"

    def __init__(self, auth_token: str, *, tolerance: float | None = None) -> None:
        if not auth_token:
            raise ValueError("the Twilio auth token is empty")
        self._token = auth_token.encode()
        self.tolerance = None if tolerance is None else _positive(tolerance)

    def __repr__(self) -> str:
        return f"TwilioVerifier(tolerance={self.tolerance})"

    def verify(self, headers: Mapping[str, str], body: bytes, url: str, now: float) -> None:
        given = _b64(_header(_lowered(headers), self.HEADER), "signature")
        try:
            query = parse_qs(urlsplit(url).query)
        except ValueError:
            raise SignatureError("url is not a URL") from None
        body_hash = query.get("bodySHA256")
        params: list[tuple[str, str]] = []
        if body_hash:
            if not hmac.compare_digest(hashlib.sha256(body).hexdigest().encode(), body_hash[0].lower().encode()):
                raise SignatureError("body does not match bodySHA256")
        else:
            try:
                params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
            except (UnicodeDecodeError, ValueError):
                raise SignatureError("body is not form-encoded") from None
        suffix = "".join(name + value for name, value in sorted(params))
        for candidate in _url_variants(url):
            expected = hmac.new(self._token, (candidate + suffix).encode(), hashlib.sha1).digest()
            if hmac.compare_digest(expected, given):
                break
        else:
            raise SignatureError("signature mismatch")
        if self.tolerance is not None:
            stamp = next((value for name, value in params if name == "Timestamp"), None)
            if stamp is None:
                raise SignatureError("missing Timestamp parameter")
            try:
                moment = parsedate_to_datetime(stamp)
            except (TypeError, ValueError):
                raise SignatureError("Timestamp is not a date") from None
            _check_fresh((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp(), now, self.tolerance)


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with its scheme's default port added (or removed when it is there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    default = _DEFAULT_PORTS.get(parts.scheme)
    prefix = f"{parts.scheme}://{parts.netloc}"
    if default is None or not url.startswith(prefix) or port not in (None, default):
        return [url]
    rest = url[len(prefix) :]
    if port is None:
        return [url, f"{prefix}:{default}{rest}"]
    return [url, f"{parts.scheme}://{parts.netloc.rsplit(':', 1)[0]}{rest}"]
