"""`dee audit checkpoint` (take one, or print the verifier key), `dee audit verify-export`
(check one exported run offline), and the checkpoint's share of `dee audit verify`."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from dee.archive.maintenance import deployment
from dee.checkpoint.keys import load_signer, load_verifier
from dee.checkpoint.proof import check_export, inclusion
from dee.checkpoint.store import origin, take_checkpoint
from dee.checkpoint.verify import CheckpointReport, verify_checkpoint
from dee.config import EngineConfig
from dee.errors import ConfigError
from dee.ops.cli.output import emit


def add_commands(audit: Any, common: argparse.ArgumentParser) -> None:
    take = audit.add_parser("checkpoint", parents=[common], help="sign a checkpoint of every run's chain head (or print the key)")
    take.add_argument("--output", metavar="FILE", help="also write the signed note to FILE")
    take.add_argument("--public-key", action="store_true", help="print the verifier key to hand to whoever checks, and stop")
    take.set_defaults(func=cmd_checkpoint)
    offline = audit.add_parser("verify-export", parents=[common], help="check an exported run against its checkpoint, offline")
    offline.add_argument("file", help="a `dee audit export RUN --format json` document")
    offline.add_argument("--public-key", required=True, metavar="KEY", help="the verifier key (or a file holding it)")
    offline.add_argument("--json", action="store_true")
    offline.set_defaults(func=cmd_verify_export)


def _signing_key(config: EngineConfig) -> str:
    if config.audit.signing_key_file is None:
        raise ConfigError("audit.signing_key_file is not set: checkpoints need a key to sign them")
    return config.audit.signing_key_file


def cmd_checkpoint(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> str:
        async with deployment(config) as conn:
            signer = load_signer(_signing_key(config), await origin(conn))
            if args.public_key:
                return signer.verifier.vkey + "\n"
            stored = await take_checkpoint(conn, signer)
            assert stored is not None  # it waits for the lock
            return stored.note

    text = asyncio.run(go())
    if args.output and not args.public_key:
        Path(args.output).write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


async def verify_against(config: EngineConfig, checkpoint_file: str, public_key: str | None) -> CheckpointReport:
    note = await asyncio.to_thread(Path(checkpoint_file).read_text, encoding="utf-8")
    async with deployment(config) as conn:
        verifier = load_verifier(public_key, config.audit.signing_key_file, await origin(conn))
        return await verify_checkpoint(conn, note, verifier)


async def export_proof(config: EngineConfig, run_id: str) -> dict[str, Any] | None:
    """The `checkpoint` section of a run's JSON export (None on memory:// or before any checkpoint)."""
    if config.database.startswith("memory:"):
        return None
    async with deployment(config) as conn:
        return await inclusion(conn, run_id)


def cmd_verify_export(args: argparse.Namespace, config: EngineConfig) -> int:
    verifier = load_verifier(args.public_key, None, "")
    try:
        document = json.loads(Path(args.file).read_bytes())
    except ValueError:
        raise ConfigError(f"{args.file}: not JSON") from None
    problems = check_export(document, verifier) if isinstance(document, dict) else ["not a DEE audit export"]
    run_id = document.get("run", {}).get("id") if isinstance(document, dict) else None
    emit({"valid": not problems, "run": run_id, "problems": problems}, args.json,
         lambda: "\n".join(problems) if problems else f"{run_id}: the export checks out against its signed checkpoint")  # fmt: skip
    return 1 if problems else 0
