"""The checkpoint signing key, read from `audit.signing_key_file`: a PEM Ed25519 private key
(PKCS #8, as `openssl genpkey -algorithm ed25519` writes it) or its 32 raw bytes. Whatever goes
wrong is said without the file's content: a key never reaches a log or an error message."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from dee.checkpoint.note import Signer, Verifier
from dee.errors import CheckpointError


def load_signer(path: str, name: str) -> Signer:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"audit.signing_key_file {path}: {exc.strerror or 'cannot be read'}") from None
    if len(raw) == 32:
        return Signer(name, Ed25519PrivateKey.from_private_bytes(raw))
    try:
        key = load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"audit.signing_key_file {path}: not an unencrypted Ed25519 private key (PEM, or 32 raw bytes)")
    return Signer(name, key)


def load_verifier(given: str | None, signing_key_file: str | None, name: str) -> Verifier:
    """The key to check checkpoints with: `given` (a verifier key, or a file holding one), else
    the public half of the configured signing key."""
    if given is not None:
        text = given
        if "+" not in given:
            try:
                text = Path(given).read_text(encoding="utf-8")
            except OSError as exc:
                raise CheckpointError(f"--public-key {given}: {exc.strerror or 'cannot be read'}") from None
        return Verifier.parse(text)
    if signing_key_file is None:
        raise CheckpointError("no key to verify with: pass --public-key, or set audit.signing_key_file")
    return load_signer(signing_key_file, name).verifier
