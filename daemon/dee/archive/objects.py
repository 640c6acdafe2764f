"""The archive's formats: a partition as gzip JSON lines, and its manifest.

An object holds one JSON object per audit row, in (run, seq) order, with the columns of
`audit_log` as stored (input, output and context are the canonical JSON text the checksum
covered, kept as text: a row read back verifies byte for byte). The manifest says what the
object must hold: the partition's bounds, the rows and runs, the object's size and SHA-256,
and each run's first and last seq with its chain's head checksum.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple, get_type_hints

import msgspec

from dee.errors import ArchiveError
from dee.kernel.audit import AuditRow

FORMAT = "dee.audit-archive/1"


# one row of an object: the columns of `audit_log` (an AuditRow's fields, `ts` for its timestamp), with the start tick
Line = msgspec.defstruct("Line", [*get_type_hints(AuditRow).items(), ("start_tick", int)], frozen=True, rename={"timestamp": "ts"})


def row_of(line: Any) -> AuditRow:
    return AuditRow(*msgspec.structs.astuple(line)[:-1])


class ChainSummary(msgspec.Struct, frozen=True, rename="camel"):
    run_id: str
    first_seq: int
    last_seq: int
    entries: int
    head: str  # the checksum of the run's last entry in the object


class Manifest(msgspec.Struct, frozen=True, rename="camel"):
    format: str
    deployment: str
    partition: str
    start_from: int
    start_to: int
    object_key: str
    rows: int
    runs: int
    bytes: int
    sha256: str
    chains: list[ChainSummary]


_encode = msgspec.json.Encoder().encode
_decode_line = msgspec.json.Decoder(Line).decode
_decode_manifest = msgspec.json.Decoder(Manifest).decode


def encode_line(values: Iterable[object]) -> bytes:
    return _encode(Line(*values)) + b"\n"


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.format(_encode(manifest), indent=2) + b"\n"


def decode_manifest(data: bytes, where: str) -> Manifest:
    try:
        manifest = _decode_manifest(data)
    except msgspec.DecodeError as exc:
        raise ArchiveError(f"{where}: not an audit archive manifest ({exc})") from None
    if manifest.format != FORMAT:
        raise ArchiveError(f"{where}: format {manifest.format!r}, expected {FORMAT}")
    return manifest


class Tally:
    """Rows and each run's chain summary, from rows given in (run, seq) order."""

    def __init__(self) -> None:
        self.rows = 0
        self.chains: list[ChainSummary] = []

    def add(self, run_id: str, seq: int, checksum: str) -> None:
        self.rows += 1
        last = self.chains[-1] if self.chains else None
        if last is not None and last.run_id == run_id:
            self.chains[-1] = ChainSummary(run_id, last.first_seq, seq, last.entries + 1, checksum)
        else:
            self.chains.append(ChainSummary(run_id, seq, seq, 1, checksum))


class Reading:
    """An object read from its compressed chunks: its lines as they come, then its size and
    SHA-256 (of the bytes as stored), known once every line was read."""

    def __init__(self, chunks: AsyncIterator[bytes], where: str) -> None:
        self._chunks = chunks
        self.where = where
        self.bytes = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    async def lines(self) -> AsyncIterator[Any]:
        inflate = zlib.decompressobj(wbits=31)  # gzip
        pending = b""
        async for chunk in self._chunks:
            self.bytes += len(chunk)
            self._digest.update(chunk)
            try:
                pending += inflate.decompress(chunk)
            except zlib.error as exc:
                raise ArchiveError(f"{self.where}: not gzip data ({exc})") from None
            *complete, pending = pending.split(b"\n")
            for text in complete:
                yield self._line(text)
        if not inflate.eof or inflate.unused_data or pending:
            raise ArchiveError(f"{self.where}: the object ends before its gzip stream does (truncated)")

    def _line(self, text: bytes) -> Any:
        try:
            return _decode_line(text)
        except msgspec.DecodeError as exc:
            raise ArchiveError(f"{self.where}: a line is not an audit row ({exc})") from None


class Checked(NamedTuple):
    """What reading an object back found."""

    bytes: int
    sha256: str
    tally: Tally


async def check_object(chunks: AsyncIterator[bytes], where: str) -> Checked:
    """Read a whole object back, tallying its rows (what `Manifest` is compared with)."""
    reading = Reading(chunks, where)
    tally = Tally()
    async for line in reading.lines():
        tally.add(line.run_id, line.seq, line.checksum)
    return Checked(reading.bytes, reading.sha256, tally)
