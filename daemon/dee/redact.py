"""Credentials never reach output or logs: URLs and messages with their passwords removed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@host and scheme://:password@host (Redis URLs often have no user)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/?#@\s]*):(?P<password>[^@/?#\s]*)@")
# key=value forms: libpq keyword strings (password=...) and query parameters (?password=...)
# (also as the end of a longer name: `ssl_password=` in a rediss:// URL, `client_secret=`)
_KEYWORD = re.compile(r"(?i)\b((?:[a-z0-9]+_)*(?:password|passwd|pwd|auth_token|token|secret))=([^\s&;]+)")

MASK = "***"


def redact(url: str) -> str:
    """The URL with any password replaced by `***` (user, host, port and path kept, so an
    error still names the service); a string that is not a URL is masked the same way."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


def redact_text(text: str) -> str:
    """Every URL password and `password=...` value in a free text (an exception's message)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEYWORD.sub(lambda m: f"{m[1]}={MASK}", text)
