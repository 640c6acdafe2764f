"""`[plugins.dee_sendgrid]`: checked once, at start-up; a wrong key stops the daemon naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec


class SendGridSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    api_key: str = ""
    api_key_file: str = ""  # a file holding the key (a mounted secret), read once at start-up
    base_url: str = "https://api.sendgrid.com"  # a test points this at a local fake
    timeout_s: float = 10.0  # bound on one API call, connection included
    max_in_flight: int = 32  # requests at once (the dispatcher hands at most this many)

    def __repr__(self) -> str:
        return f"SendGridSettings(base_url={self.base_url!r}, api_key={'***' if self.api_key or self.api_key_file else ''!r})"

    @property
    def key(self) -> str:
        if self.api_key:
            return self.api_key
        return Path(self.api_key_file).read_text(encoding="utf-8").strip() if self.api_key_file else ""


def load_settings(section: dict[str, Any]) -> SendGridSettings:
    """The plugin's table, converted (strings from the environment included) and checked."""
    try:
        settings = msgspec.convert(section, SendGridSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"[plugins.dee_sendgrid] {exc}") from None
    if settings.api_key and settings.api_key_file:
        raise ValueError("[plugins.dee_sendgrid] set api_key or api_key_file, not both")
    try:
        key = settings.key
    except OSError as exc:
        raise ValueError(f"[plugins.dee_sendgrid] api_key_file: {exc.strerror}: {settings.api_key_file}") from None
    if not key:
        raise ValueError("[plugins.dee_sendgrid] needs api_key or api_key_file")
    if not settings.base_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("[plugins.dee_sendgrid] base_url must be https (plain http only on loopback)")
    if settings.timeout_s <= 0 or settings.max_in_flight < 1:
        raise ValueError("[plugins.dee_sendgrid] timeout_s must be positive and max_in_flight at least 1")
    return settings
