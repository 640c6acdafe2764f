"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, and the tlog-checkpoint
body they carry (https://c2sp.org/tlog-checkpoint).

A note is its text (UTF-8, each line ending in a newline), a blank line, then one line per
signature: an em dash, a space, the key name, a space, and base64 of the 4-byte key hash
followed by the 64-byte Ed25519 signature of the text. The key hash is the first 4 bytes of
SHA-256(key name || 0x0A || 0x01 || public key), 0x01 naming Ed25519; a verifier key is written
`<name>+<key hash, 8 hex digits>+<base64(0x01 || public key)>`, as golang.org/x/mod/sumdb/note
reads it, so any tool of that family verifies DEE's checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dee.errors import CheckpointError

ALG_ED25519 = 0x01
DASH = "\u2014"


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash of the C2SP rule."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError(f"key name {name!r}: non-empty, without spaces or '+'")
    return name


class Verifier:
    """A public key under its name: what an outsider holds to check checkpoints."""

    def __init__(self, name: str, public_key: bytes) -> None:
        self.name = _check_name(name)
        self.public_key = public_key
        self.key_hash = key_hash(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read `<name>+<hash>+<base64(0x01 || key)>`; refuse a key whose hash does not match."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise CheckpointError("a verifier key is <name>+<key hash>+<base64 key>")
        name, hex_hash, material = parts
        try:
            raw = base64.b64decode(material, validate=True)
            expected = bytes.fromhex(hex_hash)
        except (binascii.Error, ValueError):
            raise CheckpointError("the verifier key is not valid hex and base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError("the verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_hash != expected:
            raise CheckpointError("the verifier key's hash does not match its name and key")
        return verifier

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()}"

    def verifies(self, text: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, text)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier({self.vkey!r})"


class Signer:
    """A private key under its name. The key never leaves it: not in repr, not in errors."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = _check_name(name)
        self._key = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, public)

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key hash {self.verifier.key_hash.hex()})"


def sign_note(text: str, signer: Signer) -> str:
    """The signed note of `text` (which must end in a newline and hold no blank line)."""
    if not text.endswith("\n") or "\n\n" in text or "\r" in text:
        raise CheckpointError("a note's text ends in a newline and holds no blank line")
    signature = signer.verifier.key_hash + signer.sign(text.encode())
    return f"{text}\n{DASH} {signer.name} {base64.b64encode(signature).decode()}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The text of `note` if `verifier`'s key signed it (other signatures are ignored, as the
    spec says); CheckpointError otherwise."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note: no blank line before its signatures")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    mine = False
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise CheckpointError("not a signed note: a signature line is malformed")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise CheckpointError("not a signed note: a signature is not base64") from None
        if parts[1] != verifier.name or blob[:4] != verifier.key_hash:
            continue
        mine = True
        if len(blob) == 68 and verifier.verifies(text.encode(), blob[4:]):
            return text
    if not mine:
        raise CheckpointError(f"the note has no signature by {verifier.name} (key hash {verifier.key_hash.hex()})")
    raise CheckpointError(f"the signature by {verifier.name} does not verify: the note was changed, or signed by another key")


class Checkpoint(NamedTuple):
    """A tlog-checkpoint body: origin, tree size, root hash, and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")[:-1]
        if len(lines) < 3 or not lines[0]:
            raise CheckpointError("not a checkpoint: origin, tree size and root hash lines are needed")
        origin, size, root, *extensions = lines
        if not re.fullmatch(r"0|[1-9][0-9]*", size):
            raise CheckpointError(f"not a checkpoint: tree size {size!r} is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 32:
            raise CheckpointError("not a checkpoint: the root hash is not 32 bytes of base64")
        return cls(origin, int(size), digest, tuple(extensions))
