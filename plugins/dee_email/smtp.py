"""The `smtp` email adapter: real mail over SMTP (aiosmtplib), at most once per idempotency key.

Each action becomes a MIME message, multipart text + HTML when the template has HTML, with the
engine's `Message-ID`, `From` with the sender's name, `Reply-To`, `List-Unsubscribe` and
`List-Unsubscribe-Post` (RFC 8058 one-click). It goes to one recipient through a bounded pool
of connections (`smtp_pool_size`), every exchange bounded by `smtp_timeout_ms`.

The server's answer is mapped onto the error kinds the kernel retries by: a connection that
fails or times out and `421` are transient; an enhanced status `4.7.x` is throttling
(rate_limited); `450`/`451`/`452` are soft bounces; `550`/`551`/`553` with `5.1.x` are hard
bounces; any other `5xx` is permanent. The server's reply is kept with the result.

A key whose send was accepted (or refused for good) is answered from `dee.plugin.ledger`
without sending again. The window left is SMTP's own: a crash after the server accepted DATA
and before that answer was stored sends again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib

from dee.plugin.contracts import DispatchRequest, DispatchResponse
from dee.plugin.ledger import MemorySends, RedisSends, sends_for


class _MailPolicy(EmailPolicy):
    """SMTP's policy, except that the headers a machine reads are written verbatim on one line.

    The standard policy folds a long `Message-ID` onto a continuation line and turns a
    `List-Unsubscribe` URL longer than a line into RFC 2047 encoded words, which no mailbox
    provider recognises as a one-click unsubscribe. These values are ASCII and far below the
    998-character line limit (RFC 5322 section 2.1.1), so they need no folding.
    """

    VERBATIM = frozenset({"message-id", "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post",
                          "x-smtpapi", "x-pm-metadata-dee_message_id"})  # fmt: skip

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in self.VERBATIM and str(value).isascii() and len(name) + len(str(value)) < 996:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _MailPolicy(linesep="\r\n")
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def error_kind(code: int, text: str) -> str:
    """The kernel's error kind for an SMTP reply code and its text."""
    enhanced = _ENHANCED.search(text)
    klass, subject = (enhanced.group(1), enhanced.group(2)) if enhanced else ("", "")
    if klass == "4" and subject == "7":
        return "rate_limited"
    if code == 421 or (400 <= code < 500 and code not in (450, 451, 452)):
        return "transient"
    if code in (450, 451, 452):
        return "soft_bounce"
    if code in (550, 551, 553) and klass == "5" and subject == "1":
        return "hard_bounce"
    return "permanent"


def failure(code: int, text: str) -> DispatchResponse:
    reply = f"{code} {text}".strip()
    return DispatchResponse("failed", error_kind(code, text), reply, data={"smtpCode": code, "smtpReply": reply})


def build_message(message: dict[str, Any], sender_name: str) -> EmailMessage:
    """The MIME message of an action (headers the kernel decided, plus `Date`)."""
    mail = EmailMessage(policy=MAIL_POLICY)
    mail["From"] = formataddr((sender_name, str(message["from"])))
    mail["To"] = str(message["to"])
    mail["Subject"] = str(message["subject"])
    if message.get("replyTo"):
        mail["Reply-To"] = str(message["replyTo"])
    mail["Date"] = formatdate(usegmt=True)
    for name, value in (message.get("headers") or {}).items():
        mail[name] = str(value)
    mail.set_content(str(message.get("text") or ""))
    if message.get("html"):
        mail.add_alternative(str(message["html"]), subtype="html")
    return mail


class _Pool:
    """At most `size` connections, reused; a connection that failed in any way is dropped."""

    def __init__(self, size: int, connect: Any) -> None:
        self._connect = connect
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            smtp = self._idle.pop() if self._idle else await self._connect()
            try:
                yield smtp
            except BaseException:
                smtp.close()
                raise
            if smtp.is_connected:
                self._idle.append(smtp)

    async def close(self) -> None:
        for smtp in self._idle:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        self._idle.clear()


class SmtpAdapter:
    name = "smtp"
    channel = "email"

    def __init__(self, config: Any) -> None:
        email = config.channels.email
        self.settings = email
        self.max_in_flight = email.max_in_flight  # the dispatcher hands at most this many at once
        self.sender_name = email.sender.name
        self._config = config
        self._sends: MemorySends | RedisSends | None = None
        self._pool = _Pool(email.smtp_pool_size, self._connect)

    @property
    def sends(self) -> MemorySends | RedisSends:
        if self._sends is None:  # built on first use: an adapter that is not selected opens nothing
            self._sends = sends_for(self._config, "email", lock_ms=3 * self.settings.smtp_timeout_ms)
        return self._sends

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context(cafile=s.smtp_ca_file) if s.smtp_tls != "none" else None
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username, password=s.smtp_password,
            timeout=s.smtp_timeout_ms / 1000, use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
            tls_context=context,
        )  # fmt: skip
        await smtp.connect()
        return smtp

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        return await self.sends.once(request.idempotency_key, lambda: self._deliver(request))

    async def _deliver(self, request: DispatchRequest) -> DispatchResponse:
        try:
            mail = build_message(request.message, self.sender_name)
        except (ValueError, TypeError, KeyError) as exc:  # a header the library refuses (a line break, say)
            return DispatchResponse("failed", "permanent", f"the message cannot be built: {exc}")
        try:
            async with self._pool.connection() as smtp:
                refused, reply = await smtp.sendmail(str(request.message["from"]), [str(request.message["to"])],
                                                     mail.as_bytes(policy=MAIL_POLICY))  # fmt: skip
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return failure(first.code, first.message)
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError, aiosmtplib.SMTPAuthenticationError,
                aiosmtplib.SMTPHeloError, aiosmtplib.SMTPConnectResponseError) as exc:  # fmt: skip
            return failure(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # refused, dropped, timed out
            return DispatchResponse("failed", "transient", f"{type(exc).__name__}: {exc}")
        if refused:  # with one recipient, a refusal raises; kept for servers that answer otherwise
            code, text = next(iter(refused.values()))
            return failure(code, text)
        return DispatchResponse("delivered", data={"messageId": request.message_id, "smtpReply": reply})

    async def close(self) -> None:
        await self._pool.close()
        if isinstance(self._sends, RedisSends):
            await self._sends.close()
