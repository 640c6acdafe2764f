"""Checking one run's rows, whole or a segment of its chain.

A partition normally holds whole chains. It holds a segment when its range was archived
before and an entry came for one of its runs afterwards (`replay.recorded` journaled for a
completed run): that partition then holds the entries after the archived ones, and only
`dee audit verify --archive` sees the whole chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from dee.kernel.audit import AuditRow, row_checksum, verify_chain


def check_rows(rows: Sequence[AuditRow], head_seq: int | None, head: str | None) -> str | None:
    """Why these rows (of one run, by seq) are not a sound chain ending at the run's recorded
    head, or None. From seq 1 the whole chain is verified; from a later seq, the segment."""
    if not rows:
        return "no entries"
    if rows[0].seq == 1:
        verdict = verify_chain(rows, head_seq, head)
        return None if verdict.valid else f"seq {verdict.broken_at}: {verdict.reason}"
    for before, row in pairwise(rows):
        if row.seq != before.seq + 1:
            return f"seq {row.seq} follows seq {before.seq} (missing entry)"
        if row.previous_checksum != before.checksum:
            return f"seq {row.seq}: previous_checksum does not match the entry before it"
    for row in rows:
        if row_checksum(row) != row.checksum:
            return f"seq {row.seq}: checksum does not match the entry's content"
    if head_seq is not None and (rows[-1].seq, rows[-1].checksum) != (head_seq, head):
        return f"the run's chain head is at seq {head_seq}, the entries end at seq {rows[-1].seq}"
    return None
