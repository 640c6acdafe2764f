"""`dee contacts erase ID --reason CODE`: erase a contact's personal data (`dee.privacy`), as a
client of the daemons: the partition that owns the contact destroys its key, scrubs and cancels
its runs and journals the erasure. One line out; exit 0 when the contact is erased (now or
before), 2 for a reason that is not a code, 3 when no daemon answered."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.engine import REASON_CODE, Engine
from dee.errors import ErasureReasonError
from dee.ops.cli.output import emit
from dee.records import Erasure


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    contacts = sub.add_parser("contacts", parents=[common], help="contacts").add_subparsers(
        dest="contacts_command", required=True)  # fmt: skip
    erase = contacts.add_parser("erase", parents=[common], help="erase a contact's personal data (GDPR art. 17): destroy "
                                "its key, cancel and scrub its runs")  # fmt: skip
    erase.add_argument("contact_id", metavar="ID")
    erase.add_argument("--reason", required=True, metavar="CODE",
                       help="why, as a code journaled in clear (e.g. gdpr-art17): a-z, 0-9, '.', '_', '-'")  # fmt: skip
    erase.add_argument("--json", action="store_true")
    erase.set_defaults(func=cmd_erase)


def cmd_erase(args: argparse.Namespace, config: EngineConfig) -> int:
    if not REASON_CODE.fullmatch(args.reason):  # refused before any connection
        raise ErasureReasonError(args.reason)

    async def go() -> Erasure:
        async with Engine(config, scheduler=False) as engine:
            return await engine.erase_contact(args.contact_id, args.reason)

    done = asyncio.run(go())
    emit(msgspec.to_builtins(done), args.json, lambda: line(done))
    return 0


def line(done: Erasure) -> str:
    if done.already_erased:
        return f"contact {done.contact_id}: already erased, nothing changed"
    return f"contact {done.contact_id}: erased ({done.runs} run(s) scrubbed, {len(done.cancelled)} cancelled)"
