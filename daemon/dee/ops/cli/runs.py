"""`dee runs start|list|show|timeline|replay|pause|resume|cancel|retry`: start, inspect and steer
runs, as a client of the daemons (no partition is owned, no local template is needed to read)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from dee.config import EngineConfig
from dee.engine import Engine, template_store
from dee.errors import ConfigError
from dee.ops import consents, contacts
from dee.ops.cli.output import emit
from dee.ops.cli.project import templates_for
from dee.plan.compiled import CompiledPlan
from dee.plugin.manager import PluginManager
from dee.project.plans import load_plan
from dee.records import BulkResult
from dee.redact import redact_text
from dee.shell.replayer import Replayer

ERASED = 4  # the exit code of a replay of a run whose contact was erased (`dee contacts erase`)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    runs = sub.add_parser("runs", parents=[common], help="start, inspect and steer runs").add_subparsers(dest="runs_command", required=True)
    start = runs.add_parser("start", parents=[common], help="enrol contacts in a plan: the daemons run them")
    start.add_argument("plan", help="the plan file")
    source = start.add_mutually_exclusive_group(required=True)
    source.add_argument("--contacts", metavar="FILE", help="a JSON Lines file of contacts, one object a line (- : stdin)")
    source.add_argument("--sample", type=int, metavar="N", help="N sample contacts, those of `dee simulate`")
    start.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="a variable of the runs (repeatable)")
    start.add_argument("--consent", action="append", default=[], metavar="CHANNEL",
                       help="record the contacts' granted consent on CHANNEL first, e.g. voice (repeatable)")
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=cmd_start)
    listing = runs.add_parser("list", parents=[common], help="list runs (newest last)")
    listing.add_argument("--status", action="append", help="only runs in this status (repeatable)")
    listing.add_argument("--plan")
    listing.add_argument("--contact")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    for name, func, help in (("show", cmd_show, "a run's state"), ("timeline", cmd_timeline, "a run's timeline")):
        reading = runs.add_parser(name, parents=[common], help=help)
        reading.add_argument("run_id")
        reading.add_argument("--json", action="store_true")
        reading.set_defaults(func=func)
    replay = runs.add_parser("replay", parents=[common], help="replay a run from its audit log (or an export file) and compare")
    replay.add_argument("run_id", nargs="?", help="the run (reads the deployment)")
    replay.add_argument("--export", metavar="FILE", help="replay a `dee audit export` JSON file offline instead")
    replay.add_argument("--record", action="store_true", help="journal the verdict (dry_run=False)")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)
    for name, help in (("pause", "pause a run"), ("resume", "resume a paused run"), ("retry", "retry a failed run")):
        steer = runs.add_parser(name, parents=[common], help=help)
        steer.add_argument("run_id")
        steer.set_defaults(func=cmd_steer)
    cancel = runs.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="cancelled from the command line")
    cancel.set_defaults(func=cmd_steer)


def client(config: EngineConfig) -> Engine:
    return Engine(config, scheduler=False)


def offline_replayer(config: EngineConfig) -> Replayer:
    """A replayer that needs no service: plugins, the project's templates, the export's plan."""
    plugins = PluginManager.load(disabled=config.plugins.disabled)

    async def no_store(plan_id: str, version: int) -> CompiledPlan:
        raise ConfigError(f"plan {plan_id} v{version} is not in the export")

    return Replayer(config, plugins, template_store(config, plugins), no_store)


def cmd_start(args: argparse.Namespace, config: EngineConfig) -> int:
    """Enrol, after recording the consents asked for (the consent gate reads them when a call
    is due); contacts already enrolled in the plan are skipped, so running it again is safe."""
    contacts_in = contacts.sample(args.sample) if args.sample is not None else contacts.read_jsonl(args.contacts)
    variables = contacts.variables(args.var)
    plan = load_plan(args.plan, templates=templates_for(config, args.plan))

    async def go() -> BulkResult:
        async with client(config) as engine:
            for channel in args.consent:
                await consents.grant(engine, contacts.valid_ids(contacts_in), channel, "dee runs start --consent")
            return await engine.bulk_execute(plan, contacts_in, variables)

    result = asyncio.run(go())
    emit(result, args.json, lambda: f"{plan.id}: {result.created} run(s) started, {result.skipped} skipped "
                                    f"(already enrolled or suppressed), {len(result.errors)} refused")  # fmt: skip
    if result.errors:
        first = result.errors[0]
        print(redact_text(f"dee: {len(result.errors)} contact(s) refused, first: {first.contact_id}: {first.error}"), file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with client(config) as engine:
            page = await engine.list_runs(status=args.status, plan_id=args.plan, contact_id=args.contact,
                                          limit=args.limit, offset=args.offset)  # fmt: skip

        def text() -> str:
            lines = [f"{r.id}  {r.status:<10} {r.outcome or '-':<14} {r.plan_id} v{r.plan_version}  {r.contact_id}  "
                     f"step {r.current_step or '-'}" for r in page.runs]  # fmt: skip
            return "\n".join([*lines, f"{len(page.runs)} of {page.total}"])

        emit(page, args.json, text)
        return 0

    return asyncio.run(go())


def cmd_show(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with client(config) as engine:
            run = await engine.get_run(args.run_id)
        emit(run, True, str)  # a run's state is a record: JSON either way
        return 0

    return asyncio.run(go())


def cmd_timeline(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with client(config) as engine:
            lines = await engine.get_timeline(args.run_id)
        emit(lines, args.json, lambda: "\n".join(
            f"tick {t.tick:>9}  {t.action:<17} {t.step or '':<20} {t.outcome or ''}".rstrip() for t in lines))  # fmt: skip
        return 0

    return asyncio.run(go())


def cmd_replay(args: argparse.Namespace, config: EngineConfig) -> int:
    if (args.run_id is None) == (args.export is None):
        raise ConfigError("name a run, or an export file with --export (not both)")

    async def go() -> int:
        if args.export is not None:
            result = await offline_replayer(config).replay_export(args.export)
        else:
            async with client(config) as engine:
                result = await engine.replay(args.run_id, dry_run=not args.record)

        if result.erased:
            emit({"identical": False, "erased": True, "steps": [], "diffs": []}, args.json,
                 lambda: "erased: the run's contact was erased; its recorded inputs are gone, nothing to compare")  # fmt: skip
            return ERASED

        def text() -> str:
            lines = ["identical" if result.identical else f"{len(result.diffs)} difference(s)"]
            lines += [f"  {d.step}.{d.field}: expected {d.expected!r}, got {d.actual!r}" for d in result.diffs]
            return "\n".join(lines)

        summary = {"identical": result.identical, "steps": result.steps, "diffs": result.diffs}
        emit(summary, args.json, text)
        return 0 if result.identical else 1

    return asyncio.run(go())


def cmd_steer(args: argparse.Namespace, config: EngineConfig) -> int:
    async def go() -> int:
        async with client(config) as engine:
            action = args.runs_command
            if action == "cancel":
                await engine.cancel_run(args.run_id, args.reason)
            else:
                await getattr(engine, f"{action}_run")(args.run_id)
            print(f"{args.run_id}: {(await engine.get_run(args.run_id)).status}")
        return 0

    return asyncio.run(go())
