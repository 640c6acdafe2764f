"""A private redis-server for the tests, on a free port of 127.0.0.1 with its data dir under a
test's tmp path: plaintext or TLS only (a throwaway certificate authority, a server certificate
it signed for 127.0.0.1 and localhost, and a client certificate for `tls-auth-clients yes`),
with the ACL users a test gives it (an ACL file, as an operator would write one). Its `default`
user has a random password, so nothing reaches it unauthenticated. It never touches the shared
Redis: a test may create users there, refuse commands and read `ACL LOG` freely."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.peers.smtp import free_port

START_TIMEOUT_S = 10


@dataclass(frozen=True)
class Pki:
    ca: Path  # the authority's certificate: what a client trusts (`ssl_ca_certs`)
    cert: Path  # the server's certificate and key
    key: Path
    client_cert: Path  # a client certificate and key the server accepts (`tls-auth-clients yes`)
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)


def authority(folder: Path, name: str = "ca") -> Path:
    """A self-signed CA certificate alone (`<name>.crt`), one that signed nothing a server here uses."""
    return _authority(folder, name)[0]


def _authority(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"DEE test authority {name}")])
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = folder / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def _issue(folder: Path, name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, server: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    )  # fmt: skip
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    return cert_file, key_file


def pki(folder: Path) -> Pki:
    """A CA, and a server and a client certificate it signed, written to `folder`."""
    ca, ca_key, ca_cert = _authority(folder, "redis-ca")
    cert, key = _issue(folder, "redis-server", ca_key, ca_cert, server=True)
    client_cert, client_key = _issue(folder, "redis-client", ca_key, ca_cert, server=False)
    return Pki(ca, cert, key, client_cert, client_key)


@dataclass
class RedisServer:
    port: int
    admin_password: str  # the `default` user's: every command, every key
    pki: Pki | None  # None: plaintext
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, user: str = "default", password: str | None = None, *, ca: Path | None = None, client_cert: bool = False) -> str:
        """`redis://user:password@127.0.0.1:port/0`, or over TLS `rediss://...?ssl_ca_certs=CA`
        (the server's own CA unless another is named; `client_cert` adds the client's
        certificate and key). The `default` user's password unless another is given."""
        secret = self.admin_password if password is None and user == "default" else password or ""
        base = f"{quote(user, safe='')}:{quote(secret, safe='')}@127.0.0.1:{self.port}/0"
        if self.pki is None:
            return f"redis://{base}"
        query = [f"ssl_ca_certs={quote(str(ca or self.pki.ca))}"]
        if client_cert:
            query += [f"ssl_certfile={quote(str(self.pki.client_cert))}", f"ssl_keyfile={quote(str(self.pki.client_key))}"]
        return f"rediss://{base}?{'&'.join(query)}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


def _answers(port: int, files: Pki | None) -> bool:
    """Whether the server answers a PING yet (NOAUTH is an answer: the default user has a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            conn: socket.socket = raw
            if files is not None:
                context = ssl.create_default_context(cafile=str(files.ca))
                context.load_cert_chain(str(files.client_cert), str(files.client_key))  # ignored unless asked for
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextmanager
def redis_server(folder: Path, *, acl: Sequence[str] = (), tls: bool = False, auth_clients: bool = False) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1 until the block ends: plaintext, or TLS only (no plaintext
    port) with `tls`, where `auth_clients` makes it require a client certificate. `acl`: the
    lines of its ACL file (`user NAME RULES...`), after a `default` user with a random password."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (these tests start one of their own)")
    folder.mkdir(parents=True, exist_ok=True)
    files = pki(folder) if tls else None
    port, password = free_port(), secrets.token_hex(16)
    log, users, conf = folder / "redis.log", folder / "users.acl", folder / "redis.conf"
    users.write_text("\n".join([f"user default on >{password} ~* &* +@all", *acl]) + "\n")
    users.chmod(0o600)
    listen = [f"port {port}"]
    if files is not None:
        listen = [
            "port 0", f"tls-port {port}", f"tls-cert-file {files.cert}", f"tls-key-file {files.key}",
            f"tls-ca-cert-file {files.ca}", f"tls-auth-clients {'yes' if auth_clients else 'no'}",
        ]  # fmt: skip
    throwaway = ["bind 127.0.0.1", f"dir {folder}", f"logfile {log}", 'save ""', "appendonly no", f"aclfile {users}"]
    conf.write_text("\n".join(listen + throwaway) + "\n")
    process = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, password, files, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port, files):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start: {server.log_text()[-2000:]}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
