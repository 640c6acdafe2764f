"""The key layout: a master key wraps one random AES-256 data key per contact.

A data key is only ever stored wrapped (AES-GCM under the master key, the contact id as
associated data, so a wrapped key copied to another contact's row does not open). The master
key is 32 random bytes: in a file (`[privacy] master_key_file`, created on first use with mode
0600) or, unset, in the deployment's `dee_meta` row.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dee.config import PrivacyConfig
from dee.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyUnwrapError(ValueError):
    """A wrapped key that does not open under this master key (another deployment's key, a
    replaced master key file, or a tampered row)."""


class MasterKey:
    """Wraps and unwraps contact data keys. Its bytes never leave this object (no repr)."""

    __slots__ = ("_aead",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"privacy: the master key must be {KEY_BYTES} bytes, not {len(secret)}")
        self._aead = AESGCM(secret)

    def __repr__(self) -> str:
        return "MasterKey(***)"

    def wrap(self, contact_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, contact_id.encode())

    def unwrap(self, contact_id: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], contact_id.encode())
        except InvalidTag:
            raise KeyUnwrapError(f"the key of contact {contact_id!r} does not open under this master key") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def master_key_from_file(path: str | os.PathLike[str]) -> MasterKey:
    """The master key kept in `path` (64 hex digits), made there first if the file is absent
    (created exclusively with mode 0600: two processes starting at once cannot each make one)."""
    file = Path(path)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"privacy.master_key_file {file}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(os.urandom(KEY_BYTES).hex() + "\n")
    try:
        text = file.read_text(encoding="ascii").strip()
        return MasterKey(bytes.fromhex(text))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"privacy.master_key_file {file}: not a key of {KEY_BYTES * 2} hex digits ({type(exc).__name__})") from None


def master_key(config: PrivacyConfig, stored: bytes | None) -> MasterKey:
    """The deployment's master key: from `master_key_file` when configured, else the one kept
    in the database (`stored`), else (a memory engine) one of this process alone."""
    if config.master_key_file:
        return master_key_from_file(config.master_key_file)
    return MasterKey(os.urandom(KEY_BYTES) if stored is None else stored)
