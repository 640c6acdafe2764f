"""Number lists in PostgreSQL: listing numbers and finding their contacts, race-free against
enrolment.

An enrolment records its contacts' numbers (`contact_phones`) and reads the listings of those
numbers; an import lists numbers (`suppressed_numbers`) and reads the contacts enrolled with
them. Under READ COMMITTED, two such transactions running at once would each miss the other's
uncommitted rows: the contact enrolled unsuppressed, and not found by the import. So both take
one advisory lock in their transaction: enrolments shared (they never wait for each other), an
import exclusively, for one batch of numbers at a time. Whichever commits first, the other
reads after that commit and sees its rows; an enrolment waits for one batch at most.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from dee.shell.numbers import Listed, Listing

NUMBERS_LOCK = 0x0DEE_0002  # the number lists' advisory lock (migrations hold 0x0DEE_0001)

# suppressions that stop one channel while the runs go on, and those that cover every channel:
# what `dee.shell.numbers.channel_scope` says, in SQL
CHANNEL_SCOPED = "(channel IS NOT NULL AND level IN ('channel', 'regulatory'))"
EVERY_CHANNEL = "(level = 'global' OR (level = 'regulatory' AND channel IS NULL))"


def _not_suppressed(contact: str, level: str, channel: str) -> str:
    """SQL: the contact has no suppression of this level and channel yet."""
    return (f"NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.contact_id = {contact} AND x.level = {level} "
            f"AND x.channel IS NOT DISTINCT FROM {channel})")  # fmt: skip


async def record_phones(conn: asyncpg.Connection, partition: int, phones: Sequence[tuple[str, str]]) -> dict[str, list[Listing]]:
    """`PartitionStore.listed_numbers`, inside the enrolment's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", NUMBERS_LOCK)
    contacts, numbers = [c for c, _ in phones], [n for _, n in phones]
    await conn.execute(
        "INSERT INTO contact_phones (contact_id, e164, partition) SELECT c, n, $3 FROM unnest($1::text[], $2::text[]) AS u(c, n) "
        "ON CONFLICT DO NOTHING", contacts, numbers, partition,
    )  # fmt: skip
    found: dict[str, list[Listing]] = {}
    for r in await conn.fetch(
        "SELECT p.contact_id, s.e164, s.level, s.channel, s.source, s.reason "
        "FROM unnest($1::text[], $2::text[]) AS p(contact_id, e164) JOIN suppressed_numbers s ON s.e164 = p.e164 "
        f"WHERE {_not_suppressed('p.contact_id', 's.level', 's.channel')} "
        """ORDER BY p.contact_id COLLATE "C", s.e164 COLLATE "C", s.level COLLATE "C", s.channel COLLATE "C" NULLS FIRST""",
        contacts, numbers,
    ):  # fmt: skip
        found.setdefault(r["contact_id"], []).append(Listing(r["level"], r["channel"], r["source"], r["reason"]))
    return found


async def list_numbers(conn: asyncpg.Connection, listing: Listing, numbers: Sequence[str], tick: int) -> Listed:
    """List the numbers (each once per level and channel) and find their contacts, in one
    transaction under the lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", NUMBERS_LOCK)
        new: int = await conn.fetchval(
            "WITH added AS (INSERT INTO suppressed_numbers (e164, level, channel, source, reason, tick) "
            "SELECT DISTINCT u, $2, $3, $4, $5, $6::bigint FROM unnest($1::text[]) AS u ON CONFLICT DO NOTHING RETURNING 1) "
            "SELECT count(*) FROM added",
            list(numbers), listing.level, listing.channel, listing.source, listing.reason, tick,
        )  # fmt: skip
        found = await conn.fetch(
            f"SELECT p.contact_id, bool_and({_not_suppressed('p.contact_id', '$2', '$3::text')}) AS due FROM contact_phones p "
            "WHERE p.e164 = ANY($1::text[]) GROUP BY p.contact_id",
            list(numbers), listing.level, listing.channel,
        )  # fmt: skip
    return Listed(new, len(found), sorted(r["contact_id"] for r in found if r["due"]))
