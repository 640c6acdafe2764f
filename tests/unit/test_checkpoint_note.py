"""C2SP signed notes (`dee.checkpoint.note`) against the example of golang.org/x/mod/sumdb/note
(the PeterNeumann key, its text and published signature: Ed25519 is deterministic, so signing
it again gives the same bytes), round trips of DEE's checkpoints, and the ways a note must fail."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dee.checkpoint.keys import load_signer, load_verifier
from dee.checkpoint.note import Checkpoint, Signer, Verifier, key_hash, open_note, sign_note
from dee.errors import CheckpointError

VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
NOTE = TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def peter() -> Signer:
    seed = base64.b64decode(SKEY.split("+", 4)[4])
    assert seed[0] == 1
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))


def test_the_go_example_opens_and_signing_it_again_gives_the_same_note() -> None:
    assert open_note(NOTE, Verifier.parse(VKEY)) == TEXT
    assert sign_note(TEXT, peter()) == NOTE
    assert peter().verifier.vkey == VKEY


def test_the_key_hash_is_the_c2sp_rule() -> None:
    verifier = Verifier.parse(VKEY)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()[:4]
    assert key_hash("PeterNeumann", verifier.public_key) == expected == bytes.fromhex("c74f20a3")


@pytest.mark.parametrize("at", range(0, len(TEXT) - 1, 7))
def test_a_changed_byte_of_the_text_fails(at: int) -> None:
    spoiled = TEXT[:at] + chr(ord(TEXT[at]) ^ 1) + TEXT[at + 1 :]
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(spoiled + NOTE[len(TEXT) :], Verifier.parse(VKEY))


def test_a_changed_signature_fails_and_so_do_another_name_and_another_key() -> None:
    blob = bytearray(base64.b64decode(NOTE.rsplit(" ", 1)[1]))
    blob[10] ^= 1
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(NOTE.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(blob)).decode() + "\n", Verifier.parse(VKEY))
    with pytest.raises(CheckpointError, match="no signature by"):
        open_note(NOTE.replace("PeterNeumann", "PeterPan"), Verifier.parse(VKEY))
    other = Signer("PeterNeumann", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(CheckpointError, match="no signature by"):  # same name, another key: another key hash
        open_note(NOTE, other)


@pytest.mark.parametrize("vkey", [VKEY[:-1], VKEY.replace("c74f20a3", "c74f20a4"), "PeterNeumann+c74f20a3", "Peter Neumann" + VKEY[12:],
                                  VKEY.replace("+ARpc", "+ZRpc")])  # fmt: skip
def test_a_mangled_verifier_key_is_refused(vkey: str) -> None:
    with pytest.raises(CheckpointError):
        Verifier.parse(vkey)


def test_a_checkpoint_round_trips_with_extension_lines() -> None:
    signer = Signer("dee.audit/abc", Ed25519PrivateKey.generate())
    body = Checkpoint("dee.audit/abc", 42, hashlib.sha256(b"x").digest(), ("runs 7",))
    note = sign_note(body.text(), signer)
    assert body.text() == f"dee.audit/abc\n42\n{base64.b64encode(hashlib.sha256(b'x').digest()).decode()}\nruns 7\n"
    assert Checkpoint.parse(open_note(note, Verifier.parse(signer.verifier.vkey))) == body
    with pytest.raises(CheckpointError):
        Checkpoint.parse("dee.audit/abc\n042\nAAAA\n")


def test_keys_load_from_pem_or_raw_bytes_and_never_show_in_repr_or_errors(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "key.raw").write_bytes(raw)
    one, two = load_signer(str(pem), "dee.audit/x"), load_signer(str(tmp_path / "key.raw"), "dee.audit/x")
    assert one.verifier.vkey == two.verifier.vkey
    for shown in (repr(one), repr(one.verifier)):
        assert raw.hex() not in shown and base64.b64encode(raw).decode() not in shown
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot-a-key-" + raw.hex().encode() + b"\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CheckpointError) as refused:
        load_signer(str(bad), "dee.audit/x")
    assert raw.hex() not in str(refused.value)
    vkey_file = tmp_path / "dee.vkey"
    vkey_file.write_text(one.verifier.vkey + "\n")
    assert load_verifier(str(vkey_file), None, "").vkey == one.verifier.vkey
    assert load_verifier(None, str(pem), "dee.audit/x").vkey == one.verifier.vkey
