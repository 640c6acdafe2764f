"""HTML forms as the ingress receives them (url-encoded or multipart), read with bounded work.

Both the one-click unsubscribe and providers' inbound-parse posts are forms; a multipart body is
parsed with `dee.ingress.mail.read_mime`, so a hostile form costs no more than a hostile mail.
"""

from __future__ import annotations

from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from dee.ingress.mail import MailError, MailLimits, read_mime

MAX_FORM_FIELDS = 200


def read_form(content_type: str, header: str, body: bytes, limits: MailLimits) -> dict[str, Any]:
    """A form (url-encoded, or multipart behind `header`, read with bounded work) as field name
    -> text, the first of a repeated name; `MailError` when it cannot be read."""
    fields: dict[str, Any] = {}
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MailError(f"the form cannot be read ({type(exc).__name__})") from None
        for name, value in pairs:
            fields.setdefault(name, value)
        return fields
    bounded = msgspec.structs.replace(limits, max_parts=MAX_FORM_FIELDS)
    message = read_mime(f"Content-Type: {header}\r\n\r\n".encode("utf-8", "surrogateescape") + body, bounded)
    try:
        parts = message.get_payload() if message.is_multipart() else None
        if not parts:
            raise MailError("the form has no parts")
        if len(parts) > MAX_FORM_FIELDS:
            raise MailError(f"the form has more than {MAX_FORM_FIELDS} fields")
        for part in parts:
            if not isinstance(part, Message):
                continue
            field = part.get_param("name", header="content-disposition")
            if isinstance(field, str) and field not in fields:
                raw = part.get_payload(decode=True)
                fields[field] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(part.get_payload())
    except MailError:
        raise
    except Exception as exc:  # the email package trips in many ways on hostile forms
        raise MailError(f"the form cannot be read ({type(exc).__name__})") from None
    return fields
