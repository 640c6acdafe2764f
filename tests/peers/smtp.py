"""A real SMTP server on loopback for the tests (aiosmtpd), with what a test needs to provoke:
per-recipient replies at RCPT or DATA, a connection dropped in the middle of DATA, implicit TLS
or STARTTLS with a throwaway certificate, and AUTH."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Behaviour:
    """Replies by recipient: `at_rcpt` / `at_data` map an address to a reply line (`"550 5.1.1
    no such user"`); `drop_in_data` are addresses whose DATA the server cuts off."""

    at_rcpt: dict[str, str] = field(default_factory=dict)
    at_data: dict[str, str] = field(default_factory=dict)
    drop_in_data: set[str] = field(default_factory=set)


class Recorder:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        reply = self.behaviour.at_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        to = envelope.rcpt_tos[0]
        if to in self.behaviour.drop_in_data:
            server.transport.close()  # gone before the final reply: the message was not accepted
            return "250 never sent"
        reply = self.behaviour.at_data.get(to)
        if reply:
            return reply
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 queued as test"

    def by_message_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for r in self.received:
                counts[r.message["Message-ID"]] = counts.get(r.message["Message-ID"], 0) + 1
        return counts


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (cert and key files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


class _Authenticator:
    def __init__(self, username: str, password: str) -> None:
        self.expected = (username.encode(), password.encode())

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == self.expected
        return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(
    behaviour: Behaviour | None = None, tls: str = "none", cert: tuple[Path, Path] | None = None,
    auth: tuple[str, str] | None = None,
) -> Iterator[tuple[Recorder, int]]:  # fmt: skip
    """A running server on 127.0.0.1 (its recorder and port) for the `with` block."""
    recorder = Recorder(behaviour or Behaviour())
    kwargs: dict[str, Any] = {}
    context = None
    if tls != "none":
        assert cert is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    if auth is not None:
        # over implicit TLS the connection is TLS already (aiosmtpd only knows of STARTTLS)
        kwargs.update(authenticator=_Authenticator(*auth), auth_required=True, auth_require_tls=tls == "starttls")
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ssl_context=context if tls == "tls" else None,
                            server_hostname="localhost", **kwargs)  # fmt: skip
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()
