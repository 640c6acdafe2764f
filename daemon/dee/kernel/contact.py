"""The contact as runs see it."""

from __future__ import annotations

from typing import Any

import msgspec


class Contact(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A contact as runs see it. Flags are contact-level: every run of the contact sees them."""

    id: str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None  # IANA name; unknown: the policy gates use the phone's region, or a default
    attributes: dict[str, Any] = {}
    unsubscribed: bool = False
    bounced: bool = False
