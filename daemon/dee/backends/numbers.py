"""Listing phone numbers (a do-not-call list), written once for both backends.

Numbers are taken `BATCH` at a time. Each batch is listed in one step of the store (in
PostgreSQL one transaction under the number lists' lock, `stores.postgres.numbers`), which also
finds the contacts enrolled with those numbers that have no suppression of the listing's level
and channel yet; each of them then gets an ordinary `suppress` message on its partition,
recorded and journaled there like any other suppression. A batch is delivered before the next
one is read, so memory holds one batch, whatever the size of the list.

An import cut short (a partition that did not answer, an interrupted process) is finished by
running it again: its numbers are listed already and the contacts not suppressed yet are found
again; a suppression delivered twice has the same commandId (`Listing.command_id`) and is
applied once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

from dee.bus import messages as wire
from dee.records import NumberImport
from dee.routing import partition_for
from dee.shell.numbers import E164, Listing, normalise

if TYPE_CHECKING:
    from dee.backends.client import Publisher

BATCH = 5000  # numbers listed per step, and suppressions published per round at most


async def suppress_numbers(publisher: Publisher, numbers: Iterable[str], listing: Listing) -> NumberImport:
    """List the numbers (E.164, or any international form) and suppress their contacts; a
    number that is not one raises InvalidNumberError before anything of its batch is listed.
    Batches are read off the event loop (the numbers may come from a file being parsed)."""
    tick = await publisher.now_tick()
    source = iter(numbers)
    total = NumberImport()
    while batch := await asyncio.to_thread(_take, source):
        listed = await publisher.list_numbers(listing, batch, tick)
        cancelled, restricted = await _deliver(publisher, listing, listed.unsuppressed)
        total = NumberImport(
            read=total.read + len(batch), new=total.new + listed.new, listed=total.listed + len(batch) - listed.new,
            contacts=total.contacts + listed.matched, suppressed=total.suppressed + len(listed.unsuppressed),
            runs_cancelled=total.runs_cancelled + cancelled, runs_restricted=total.runs_restricted + restricted,
        )  # fmt: skip
    return total


def _take(source: Iterator[str]) -> list[str]:
    """The next batch, each number normalised (unless `normalise` wrote it already)."""
    return [number if isinstance(number, E164) else normalise(number) for number in islice(source, BATCH)]


async def _deliver(publisher: Publisher, listing: Listing, contacts: list[str]) -> tuple[int, int]:
    """A suppression per contact, published `BATCH` at a time, each answered after its partition
    committed it; returns the runs cancelled and the runs restricted. A refusal or a partition
    that did not answer is raised once every other one of its round has been answered."""
    cancelled = restricted = 0
    for start in range(0, len(contacts), BATCH):
        replies = await asyncio.gather(*(publisher.ask(partition_for(c, publisher.partitions), _message(publisher, listing, c))
                                         for c in contacts[start : start + BATCH]), return_exceptions=True)  # fmt: skip
        failed = [r for r in replies if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        answered = [r for r in replies if isinstance(r, wire.Reply)]
        cancelled += sum(len(r.runs) for r in answered)
        restricted += sum(len(r.restricted) for r in answered)
    return cancelled, restricted


def _message(publisher: Publisher, listing: Listing, contact_id: str) -> wire.Suppress:
    return wire.Suppress(command_id=listing.command_id(contact_id), reply_to=publisher.reply_stream, contact_id=contact_id,
                         level=listing.level, reason=listing.reason, source=listing.source, channel=listing.channel)  # fmt: skip
