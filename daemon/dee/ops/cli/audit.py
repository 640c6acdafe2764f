"""`dee audit verify|export|compliance`: the audit log, read as a client of the daemons (and
`archive|restore`, in `dee.ops.cli.retention`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from dee.checkpoint.verify import CheckpointReport, Finding
from dee.config import EngineConfig
from dee.engine import Engine
from dee.errors import AuditChainError, ConfigError
from dee.kernel.run_row import row_problems
from dee.ops.cli import checkpoint, retention
from dee.ops.cli.output import emit
from dee.reports.compliance import render_text


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", parents=[common], help="audit log").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", parents=[common], help="verify audit chains (every run when none is named)")
    verify.add_argument("run_ids", nargs="*")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--archive", action="store_true", help="also the chains of archived partitions, read from S3")
    verify.add_argument("--checkpoint", metavar="FILE", help="also check the database against this signed checkpoint")
    verify.add_argument("--public-key", metavar="KEY", help="the checkpoint's verifier key, or a file holding it "
                        "(default: the public half of audit.signing_key_file)")  # fmt: skip
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
    checkpoint.add_commands(audit, common)


def cmd_verify(args: argparse.Namespace, config: EngineConfig) -> int:
    """Live chains, and each run's row against what its chain implies (`run_row`); a run whose
    partition was archived is checked across the archive with `--archive`, and without it is
    counted apart rather than as broken. `--checkpoint` adds the checks against a signed
    checkpoint (`dee.checkpoint.verify`)."""

    async def go() -> int:
        findings: list[Finding] = []
        async with Engine(config, scheduler=False) as engine:
            if args.run_ids:
                runs = {i: await engine.get_run(i) for i in dict.fromkeys(args.run_ids)}
            else:
                runs = {r.id: r for r in (await engine.list_runs(limit=10**9)).runs}
            ids = list(runs)
            archived, across = await retention.archived_share(config, ids, args.archive)
            live = {}
            open_run = await engine.audit.opener(ids)  # the contacts' keys, read once
            async for run_id, entries, verdict in engine.read_chains([i for i in ids if not (args.archive and i in archived)]):
                live[run_id] = verdict
                run = runs.get(run_id)
                # a whole, unbroken chain (not the live segment of an archived one; a broken one is
                # reported as such): its row against it, read opened (an outcome is sealed with its entry)
                if run is not None and entries and entries[0].seq == 1 and verdict.valid:
                    try:
                        opened, _ = open_run(run_id, entries)
                    except AuditChainError as exc:  # a sealed part moved or altered, the chain re-made around it
                        findings.append(Finding("sealed", str(exc), run_id))
                        continue
                    findings += [Finding("run_row", why, run_id) for why in row_problems(run.status, run.outcome, run.current_step, opened)]
        ckpt = await checkpoint.verify_against(config, args.checkpoint, args.public_key) if args.checkpoint else None
        found = live | across.chains
        verdicts = {i: found[i] for i in ids if i in found}
        unchecked = [] if args.archive else [i for i, v in verdicts.items() if not v.valid and i in archived]
        for run_id in unchecked:
            del verdicts[run_id]
        broken = {run_id: v for run_id, v in verdicts.items() if not v.valid}
        findings = [Finding("chain", f"seq {v.broken_at}: {v.reason}", run_id) for run_id, v in broken.items()] + findings
        findings += [Finding("archive", why) for why in across.archives]
        if ckpt is not None:
            wanted = set(args.run_ids)
            findings += [f for f in ckpt.findings if not wanted or f.run_id is None or f.run_id in wanted]

        def text() -> str:
            lines = []
            for run_id, v in verdicts.items():
                if not v.valid:
                    lines.append(f"{run_id}: BROKEN at seq {v.broken_at}: {v.reason}")
                elif args.run_ids:
                    lines.append(f"{run_id}: valid ({v.entries} entries, ticks {v.first_tick}..{v.last_tick})")
            lines += [f"archive BROKEN: {why}" for why in across.archives]
            for f in findings:
                if f.check not in ("chain", "archive"):  # said above, as before
                    lines.append(f"{f.check}: {f.run_id + ': ' if f.run_id else ''}{f.detail}")
            total = f"{len(verdicts) - len(broken)}/{len(ids)} chains valid"
            if unchecked:
                total += f", {len(unchecked)} archived (dee audit verify --archive checks them)"
            if across.unverifiable:
                total += f", {len(across.unverifiable)} dropped without an archive"
            if ckpt is not None:
                total += "\n" + _checkpoint_line(ckpt)
            return "\n".join([*lines, total])

        emit({"valid": not findings, "runs": len(ids), "broken": len(broken), "chains": verdicts,
              "archived": unchecked, "unverifiable": across.unverifiable, "archive_problems": across.archives,
              "findings": findings, "checkpoint": ckpt}, args.json, text)  # fmt: skip
        return 1 if findings else 0

    return asyncio.run(go())


def _checkpoint_line(report: CheckpointReport) -> str:
    return (f"checkpoint of {report.size} leaves: {report.checked} runs checked ({report.archived} archived, by their "
            f"recorded heads), {report.newer} newer runs")  # fmt: skip


def cmd_export(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with Engine(config, scheduler=False) as engine:
            document = await engine.audit.export(args.run_id, args.format, None)
        if args.format == "json":
            proof = await checkpoint.export_proof(config, args.run_id)
            document = msgspec.json.format(msgspec.json.encode({**msgspec.json.decode(document), "checkpoint": proof}), indent=2)
        if args.output is not None:
            await asyncio.to_thread(_write, args.output, document)
        if args.output is None:
            sys.stdout.buffer.write(document)
            sys.stdout.buffer.flush()
        else:
            print(f"{args.output}: {len(document):,} bytes ({args.format})", file=sys.stderr)
        return 0

    return asyncio.run(go())


def _write(path: str, document: bytes) -> None:
    with open(path, "wb") as out:
        out.write(document)


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
