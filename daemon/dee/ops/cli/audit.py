"""`dee audit verify|export|compliance`: the audit log, read as a client of the daemons (and
`archive|restore`, in `dee.ops.cli.retention`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from dee.config import EngineConfig
from dee.engine import Engine
from dee.errors import ConfigError
from dee.ops.cli import retention
from dee.ops.cli.output import emit
from dee.reports.compliance import render_text


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", parents=[common], help="audit log").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", parents=[common], help="verify audit chains (every run when none is named)")
    verify.add_argument("run_ids", nargs="*")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--archive", action="store_true", help="also the chains of archived partitions, read from S3")
    verify.set_defaults(func=cmd_verify)
    export = audit.add_parser("export", parents=[common], help="a run's audit log as JSON (chain included) or a PDF report")
    export.add_argument("run_id")
    export.add_argument("--format", choices=("json", "pdf"), default="json")
    export.add_argument("--output", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_export)
    compliance = audit.add_parser("compliance", parents=[common], help="the compliance report of a period of ticks")
    compliance.add_argument("--from", dest="period_from", type=int, default=0, metavar="TICK", help="first tick (default: 0)")
    compliance.add_argument("--to", dest="period_to", type=int, metavar="TICK", help="last tick (default: the current one)")
    compliance.add_argument("--json", action="store_true")
    compliance.set_defaults(func=cmd_compliance)
    retention.add_commands(audit, common)


def cmd_verify(args: argparse.Namespace, config: EngineConfig) -> int:
    """Live chains; a run whose partition was archived is checked across the archive with
    `--archive`, and without it is counted apart rather than as broken."""

    async def go() -> int:
        async with Engine(config, scheduler=False) as engine:
            ids = list(dict.fromkeys(args.run_ids)) or [r.id for r in (await engine.list_runs(limit=10**9)).runs]
            archived, across = await retention.archived_share(config, ids, args.archive)
            live = await engine.verify_audit_chains([i for i in ids if not (args.archive and i in archived)])
        found = live | across.chains
        verdicts = {i: found[i] for i in ids if i in found}
        unchecked = [] if args.archive else [i for i, v in verdicts.items() if not v.valid and i in archived]
        for run_id in unchecked:
            del verdicts[run_id]
        broken = {run_id: v for run_id, v in verdicts.items() if not v.valid}

        def text() -> str:
            lines = []
            for run_id, v in verdicts.items():
                if not v.valid:
                    lines.append(f"{run_id}: BROKEN at seq {v.broken_at}: {v.reason}")
                elif args.run_ids:
                    lines.append(f"{run_id}: valid ({v.entries} entries, ticks {v.first_tick}..{v.last_tick})")
            lines += [f"archive BROKEN: {why}" for why in across.archives]
            total = f"{len(verdicts) - len(broken)}/{len(ids)} chains valid"
            if unchecked:
                total += f", {len(unchecked)} archived (dee audit verify --archive checks them)"
            if across.unverifiable:
                total += f", {len(across.unverifiable)} dropped without an archive"
            return "\n".join([*lines, total])

        emit({"valid": not broken and not across.archives, "runs": len(ids), "broken": len(broken), "chains": verdicts,
              "archived": unchecked, "unverifiable": across.unverifiable, "archive_problems": across.archives},
             args.json, text)  # fmt: skip
        return 1 if broken or across.archives else 0

    return asyncio.run(go())


def cmd_export(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with Engine(config, scheduler=False) as engine:
            document = await engine.audit.export(args.run_id, args.format, args.output)
        if args.output is None:
            sys.stdout.buffer.write(document)
            sys.stdout.buffer.flush()
        else:
            print(f"{args.output}: {len(document):,} bytes ({args.format})", file=sys.stderr)
        return 0

    return asyncio.run(go())


def cmd_compliance(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with Engine(config, scheduler=False) as engine:
            period_to = await engine.now_tick() if args.period_to is None else args.period_to
            if period_to < args.period_from:
                raise ConfigError(f"--to {period_to} is before --from {args.period_from}")
            report = await engine.compliance.report(args.period_from, period_to)
        emit(report, args.json, lambda: render_text(report))
        return 0

    return asyncio.run(go())
