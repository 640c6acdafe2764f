"""Phone numbers on suppression lists: the one way a number is written (E.164), and what a
listed number means for the contacts whose number it is.

A do-not-call list names numbers, not contacts. Numbers are compared in E.164 (`+`, country
code, national number), the numbers of a list and the numbers contacts are enrolled with
alike. A contact whose number is listed gets a suppression of its own, with the listing's
level, channel, source and reason: from the import for a contact enrolled before it, at
enrolment for one enrolled after (`shell.enrol`). A suppression that names its channel
(channel level, or a regulatory one such as a do-not-call list, which forbids calls and not
emails) stops that channel's sends while the contact's runs go on; one that names none covers
the contact on every channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, cast

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from dee.errors import DeeError, InvalidNumberError
from dee.records import Suppression, SuppressionLevel

_PARSE_ERRORS = {
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_SHAPES = {
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number: its area code is missing",
    ValidationResult.TOO_SHORT: "too short for its country",
    ValidationResult.TOO_LONG: "too long for its country",
    ValidationResult.INVALID_LENGTH: "no number of its country has this length",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


class E164(str):
    """A number `normalise` wrote: taken as it is where numbers are listed (a list is read
    once, not parsed again)."""

    __slots__ = ()


def normalise(raw: str, region: str | None = None) -> E164:
    """`raw` in E.164; `region` (ISO 3166 code, `US`) is the country of a number written
    without its country code. InvalidNumberError says why a number is no complete number. The
    check is of shape (a length some number of its country has), not of allocated ranges:
    a list is never refused because the number metadata lags behind a new area code."""
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidNumberError(raw, "unknown country code" if region or raw.lstrip().startswith("+")
                                     else "no country code (and no region for national numbers)") from None  # fmt: skip
        raise InvalidNumberError(raw, _PARSE_ERRORS.get(exc.error_type, "not a phone number")) from None
    shape = phonenumbers.is_possible_number_with_reason(number)
    if shape != ValidationResult.IS_POSSIBLE:
        raise InvalidNumberError(raw, _SHAPES.get(shape, "not a possible number"))
    return E164(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def e164(phone: str | None) -> str | None:
    """A contact's number in E.164, or None when it has none the engine can read (a contact's
    number must carry its country code: nothing tells which country a national one is in)."""
    if not phone:
        return None
    try:
        return normalise(phone)
    except InvalidNumberError:
        return None


def channel_scope(level: str, channel: str | None) -> str | None:
    """The one channel a suppression stops while the contact's runs go on, or None when it
    covers the contact on every channel it reaches (global, regulatory without a channel: every
    run cancelled and new ones refused; plan: that plan's). The stores' queries say the same:
    `stores.postgres.partition.CHANNEL_SCOPED`."""
    if level == "channel" or (level == "regulatory" and channel):
        return channel
    return None


NUMBER_LEVELS = ("regulatory", "channel", "global")  # what a number can be listed at (a plan's lists are the plan's business)


class Listing(NamedTuple):
    """How numbers are listed: the suppression each gives the contacts whose number it is."""

    level: SuppressionLevel
    channel: str | None
    source: str
    reason: str

    @classmethod
    def of(cls, level: str, channel: str | None, source: str, reason: str, channels: Sequence[str]) -> Listing:
        """A listing, checked: a level numbers can have, a known channel, one the level allows
        (a channel-level listing needs it, a global one covers every channel), a source."""
        if level not in NUMBER_LEVELS:
            raise DeeError(f"numbers are listed at level {', '.join(NUMBER_LEVELS)}, not {level!r}")
        if channel is not None and channel not in channels:
            raise DeeError(f"unknown channel {channel!r} (channels: {', '.join(channels)})")
        if level == "channel" and channel is None:
            raise DeeError("a channel-level listing needs a channel")
        if level == "global" and channel is not None:
            raise DeeError("a global listing covers every channel: it takes no channel (use --level channel or regulatory)")
        if not source.strip():
            raise DeeError("a listing needs a source (where the list comes from)")
        return cls(cast(SuppressionLevel, level), channel, source, reason)

    def suppression(self, contact_id: str, tick: int) -> Suppression:
        return Suppression(contact_id=contact_id, level=self.level, channel=self.channel, source=self.source, reason=self.reason,
                           tick=tick)  # fmt: skip

    def command_id(self, contact_id: str) -> str:
        """The commandId of the contact's suppression: the same for every import of this
        listing, so one delivered again after an interrupted import is applied once."""
        key = "\0".join((self.level, self.channel or "", self.source, self.reason, contact_id))
        return f"number-list-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


class Listed(NamedTuple):
    """What listing a batch of numbers found: how many numbers were new, how many contacts have
    one of them, and those of them with no suppression of the listing's level and channel yet."""

    new: int
    matched: int
    unsuppressed: list[str]
