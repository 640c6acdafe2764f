"""`dee suppress import FILE`: list the phone numbers of a file (a do-not-call list) and suppress
every contact with one of them, enrolled before or after; as a client of the daemons.

The file is read twice unless `--skip-invalid` is given: once to find lines that are no number
(then nothing is imported: the first few are named and the command exits 2), once to import.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.engine import Engine
from dee.ops.cli.output import emit
from dee.ops.dnc_file import Scan, check, read_numbers, region_of
from dee.plugin.manager import CHANNELS
from dee.records import NumberImport
from dee.shell.numbers import NUMBER_LEVELS, Listing

DEFAULT_CHANNEL = "voice"  # a do-not-call list forbids calls; the contact's email stays lawful


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    suppress = sub.add_parser("suppress", parents=[common], help="suppression lists").add_subparsers(
        dest="suppress_command", required=True)  # fmt: skip
    imp = suppress.add_parser("import", parents=[common], help="list the phone numbers of a file (a do-not-call list) "
                              "and suppress the contacts that have them")  # fmt: skip
    imp.add_argument("file", help="one number per line, CSV with a phone (or number) column, or area code,number rows")
    imp.add_argument("--level", choices=NUMBER_LEVELS, default="regulatory", help="the suppressions' level (default: regulatory)")
    scope = imp.add_mutually_exclusive_group()
    scope.add_argument("--channel", choices=CHANNELS, help=f"the channel the numbers' contacts get nothing on; their runs "
                       f"go on (default: {DEFAULT_CHANNEL}; none for --level global)")  # fmt: skip
    scope.add_argument("--all-channels", action="store_true",
                       help="suppress the contacts on every channel: their runs are cancelled, new enrolments refused")  # fmt: skip
    imp.add_argument("--source", default="dnc", help="where the list comes from, recorded with each suppression (default: dnc)")
    imp.add_argument("--reason", default="do-not-call list", help="recorded with each suppression (default: do-not-call list)")
    imp.add_argument("--region", help="the country of numbers written without their country code (US, GB, ...)")
    imp.add_argument("--skip-invalid", action="store_true", help="import the numbers even where some lines hold none")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_import)


def channel_of(args: argparse.Namespace) -> str | None:
    if args.all_channels or (args.level == "global" and args.channel is None):
        return None
    return str(args.channel or DEFAULT_CHANNEL)


def cmd_import(args: argparse.Namespace, config: EngineConfig) -> int:
    region = region_of(args.region)
    listing = Listing.of(args.level, channel_of(args), args.source, args.reason, CHANNELS)  # refused before reading the file
    if not args.skip_invalid:
        found = check(args.file, region)
        if found.invalid:
            raise found.refusal(args.file)
    scan = Scan()

    async def go() -> NumberImport:
        async with Engine(config, scheduler=False) as engine:
            numbers = read_numbers(args.file, region, scan)
            return await engine.suppress_numbers(numbers, listing.level, listing.channel, listing.source, listing.reason)

    done = asyncio.run(go())
    summary = {"file": args.file, "level": listing.level, "channel": listing.channel, "source": listing.source,
               "invalid_skipped": scan.invalid, **msgspec.to_builtins(done)}  # fmt: skip
    emit(summary, args.json, lambda: report(args.file, listing, done, scan.invalid))
    return 0


def report(path: str, listing: Listing, done: NumberImport, skipped: int) -> str:
    """What the import did, in three lines at most."""
    scope = f"{listing.level}, {listing.channel or 'every channel'}"
    lines = [f"{path}: {done.read:,} numbers read: {done.new:,} newly listed ({scope}), {done.listed:,} listed before"
             + (f"; {skipped:,} invalid lines skipped" if skipped else "")]  # fmt: skip
    runs = f"{done.runs_cancelled:,} runs cancelled" if listing.channel is None else \
        f"{done.runs_restricted:,} runs go on without {listing.channel}"  # fmt: skip
    lines.append(f"contacts with a listed number: {done.contacts:,}, {done.suppressed:,} suppressed now; {runs}")
    if not done.new and not done.suppressed:
        lines.append("nothing changed: every number was listed and every contact suppressed before")
    return "\n".join(lines)
