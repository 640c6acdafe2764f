"""Link tokens: what an open pixel, a tracked link or an unsubscribe link carries, signed.

A token names its run, step, contact and kind (`o` open, `c` click, `u` unsubscribe), the tick
after which it is refused, and for a click the digest of the one URL it may redirect to. The
ingress verifies it with the key alone (HMAC-SHA256, no database lookup), so a forged, altered
or expired token is refused before anything is recorded, and a click can never become an open
redirect. Tokens are made inside the kernel, deterministically (same key, same inputs, same
token); the signature follows a `~` so that `strip_signatures` can take it out of the content a
step's content hash covers: rotating the key changes no hash, and replay stays identical.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import NamedTuple

import msgspec

KINDS = ("o", "c", "u")
SIGNATURE_BYTES = 16
_SIGNED = re.compile(r"~[A-Za-z0-9_-]{22}")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(tuple[int, str, str, str, str, int, str]).decode


class TokenError(ValueError):
    """A token that is malformed, not signed with a current key, expired, or for another URL."""


class LinkToken(NamedTuple):
    kind: str
    run_id: str
    step_id: str
    contact_id: str
    expires_tick: int
    url_digest: str


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES])


def make(key: bytes, kind: str, run_id: str, step_id: str, contact_id: str, expires_tick: int, url: str = "") -> str:
    """A signed token (without a key, an unsigned one that no ingress accepts)."""
    body = _b64(_encode((1, kind, run_id, step_id, contact_id, expires_tick, url_digest(url) if url else "")))
    return f"{body}~{_mac(key, body) if key else ''}"


def read(token: str, keys: tuple[bytes, ...], now_tick: int | None, url: str | None = None) -> LinkToken:
    """The token's contents if one of `keys` signed it, it has not expired at `now_tick` (None:
    whatever its age, as for an unsubscribe link), and (a click) `url` is the URL it was made
    for; else TokenError."""
    body, tilde, signature = token.partition("~")
    if not (tilde and body and signature) or len(token) > 2048:
        raise TokenError("malformed token")
    if not any(hmac.compare_digest(_mac(key, body), signature) for key in keys if key):
        raise TokenError("not signed by this deployment")
    try:
        version, kind, run_id, step_id, contact_id, expires, digest = _decode(_unb64(body))
    except (ValueError, msgspec.DecodeError) as exc:
        raise TokenError("malformed token") from exc
    if version != 1 or kind not in KINDS:
        raise TokenError("unknown token kind")
    if now_tick is not None and now_tick > expires:
        raise TokenError("expired")
    if url is not None and not hmac.compare_digest(digest, url_digest(url)):
        raise TokenError("not made for this URL")
    return LinkToken(kind, run_id, step_id, contact_id, expires, digest)


def strip_signatures(text: str) -> str:
    """The text with every token's signature taken out (what a content hash covers)."""
    return _SIGNED.sub("~", text)
