"""The `dee` command. Each subcommand is a small function; errors print one clear line.

Exit codes: 0 success, 1 the check failed (invalid plan, a replay diverged, a broken chain,
unhealthy), 2 bad usage, configuration or an unavailable engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.errors import DeeError, PlanFileError, PlanValidationError
from dee.project.plans import load_plan
from dee.plan.graph import to_dot, to_mermaid
from dee.plugin.manager import PluginManager


def load_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig.load(args.config)


def _templates(args: argparse.Namespace) -> Any:
    from dee.project.templates import load_directory

    return load_directory(load_config(args).config_dir)


def cmd_plugins(args: argparse.Namespace) -> int:
    rows = PluginManager.load(disabled=load_config(args).plugins.disabled).describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['source']}; module {row['module']})")
        for item in row["provides"]:
            print(f"    {item}")
    return 0


def cmd_plan_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            plan = load_plan(path, templates=_templates(args))
        except PlanValidationError as exc:
            failed += 1
            print(f"{path}: invalid, {len(exc.problems)} problem(s)")
            for problem in exc.problems:
                print(f"  - {problem}")
            continue
        except PlanFileError as exc:
            failed += 1
            print(f"{path}: {exc}")
            continue
        print(f"{path}: ok  ({plan.id}, {len(plan.steps)} steps, checksum {plan.checksum[:12]})")
    return 1 if failed else 0


def cmd_plan_graph(args: argparse.Namespace) -> int:
    from dee.plan.prepare import prepare_plan

    templates = _templates(args)
    compiled = prepare_plan(load_plan(args.file, templates=templates), PluginManager.load().step_types(), templates)
    print(to_dot(compiled) if args.format == "dot" else to_mermaid(compiled))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from dee.bus.messages import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from dee.stores.postgres.admin import ensure_database
    from dee.stores.postgres.migrate import migrate

    config = load_config(args)

    async def go() -> list[str]:
        await ensure_database(config.database)
        conn = await asyncpg.connect(config.database)
        try:
            return await migrate(conn, config)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dee.ops.daemon import run

    config = load_config(args)
    if config.database.startswith("memory:"):
        print("dee: the daemon needs a PostgreSQL database (database = postgresql://...)", file=sys.stderr)
        return 2
    return run(config)


def cmd_health(args: argparse.Namespace) -> int:
    from dee.ops.health import check

    report = asyncio.run(check(load_config(args)))
    for name, (ok, detail) in report.items():
        print(f"{'ok  ' if ok else 'FAIL'}  {name:<12} {detail}")
    return 0 if all(ok for ok, _ in report.values()) else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from dee.ops import gc_tuning
    from dee.ops.simulate import format_report, progress_bar, run_simulation

    gc_tuning.tune()
    config = load_config(args)
    plan = load_plan(args.plan, templates=_templates(args))
    report = asyncio.run(run_simulation(config, plan, args.contacts, args.days, args.memory, args.database, args.redis,
                                        None if args.quiet else progress_bar))  # fmt: skip
    print(format_report(report, config.scheduler.tick_interval_ms))
    total = sum(report.outcomes.values())
    return 0 if report.replay_identical == total and report.chains_valid == total else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from dee.ops import gc_tuning
    from dee.ops.bench.run import run_bench

    gc_tuning.tune()
    config = load_config(args)
    if args.database or args.redis:
        config = msgspec.structs.replace(config, database=args.database or config.database, redis=args.redis or config.redis)
    daemons = tuple(int(n) for n in args.daemons.split(","))
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = asyncio.run(run_bench(config, args.contacts, daemons, idle_runs=args.idle_runs, progress=progress))
    if not args.json:
        print(report.table())
    print(report.json_line())
    return 0 if not report.problems() else 1


def _client(args: argparse.Namespace) -> Any:
    from dee.engine import Engine

    return Engine(load_config(args), scheduler=False)


def _print(value: Any) -> None:
    print(json.dumps(msgspec.to_builtins(value), indent=2, default=str))


def cmd_runs(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as engine:
            action = args.runs_command
            if action == "list":
                page = await engine.list_runs(status=args.status, plan_id=args.plan, contact_id=args.contact,
                                              limit=args.limit, offset=args.offset)  # fmt: skip
                for run in page.runs:
                    print(f"{run.id}  {run.status:<10} {run.outcome or '-':<14} {run.plan_id} v{run.plan_version}  "
                          f"{run.contact_id}  step {run.current_step or '-'}")  # fmt: skip
                print(f"{len(page.runs)} of {page.total}")
            elif action == "show":
                _print(await engine.get_run(args.run_id))
            elif action == "timeline":
                for t in await engine.get_timeline(args.run_id):
                    print(f"tick {t.tick:>9}  {t.action:<16} {t.step or '':<20} {t.outcome or ''}")
            elif action == "replay":
                result = await engine.replay(args.run_id, dry_run=not args.record)
                print("identical" if result.identical else f"{len(result.diffs)} difference(s)")
                for diff in result.diffs:
                    print(f"  {diff.step}.{diff.field}: expected {diff.expected!r}, got {diff.actual!r}")
                return 0 if result.identical else 1
            elif action == "cancel":
                await engine.cancel_run(args.run_id, args.reason)
            else:
                await getattr(engine, f"{action}_run")(args.run_id)
            if action in ("pause", "resume", "cancel", "retry"):
                print(f"{args.run_id}: {(await engine.get_run(args.run_id)).status}")
            return 0

    return asyncio.run(go())


def cmd_audit_verify(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as engine:
            ids = list(dict.fromkeys(args.run_ids)) or [r.id for r in (await engine.list_runs(limit=10**9)).runs]
            broken = 0
            for run_id, result in (await engine.verify_audit_chains(ids)).items():
                if not result.valid:
                    broken += 1
                    print(f"{run_id}: BROKEN at seq {result.broken_at}: {result.reason}")
                elif args.run_ids:
                    print(f"{run_id}: valid ({result.entries} entries, ticks {result.first_tick}..{result.last_tick})")
            print(f"{len(ids) - broken}/{len(ids)} chains valid")
            return 1 if broken else 0

    return asyncio.run(go())


def cmd_audit_export(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as engine:
            document = await engine.audit.export(args.run_id, args.format, args.output)
        if args.output is None:
            sys.stdout.buffer.write(document)
        else:
            print(f"{args.output}: {len(document):,} bytes ({args.format})", file=sys.stderr)
        return 0

    return asyncio.run(go())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dee", description="DEE, the Deterministic Execution Engine")
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults + environment)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Any, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    command("plugins", cmd_plugins, "list installed plugins and where they came from").add_argument("--json", action="store_true")
    plan = sub.add_parser("plan", help="plan files").add_subparsers(dest="plan_command", required=True)
    command("validate", cmd_plan_validate, "check plan files against every validation rule", plan).add_argument("files", nargs="+")
    graph = command("graph", cmd_plan_graph, "print the plan as a Mermaid or Graphviz graph", plan)
    graph.add_argument("file")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    command("schema", cmd_schema, "print the JSON Schema of the wire messages")
    command("migrate", cmd_migrate, "create the database if needed and apply migrations")
    command("run", cmd_run, "run the daemon (SIGTERM drains and exits 0)")
    command("health", cmd_health, "check Postgres, Redis, migrations, partitions and plugins")

    simulate = command("simulate", cmd_simulate, "run a plan for simulated contacts on a manual clock")
    simulate.add_argument("plan")
    simulate.add_argument("--contacts", type=int, default=1000)
    simulate.add_argument("--days", type=int, default=10)
    simulate.add_argument("--memory", action="store_true", help="run in this process, without Postgres and Redis")
    simulate.add_argument("--database", help="database to (re)create for the simulation (default: <config db>_simulate)")
    simulate.add_argument("--redis", help="Redis for the simulation (default: the configured one; keys under <namespace>-simulate)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")

    bench = command("bench", cmd_bench, "measure throughput on the fixed outreach-v2 workload (a scratch database)")
    bench.add_argument("--contacts", type=int, default=10_000)
    bench.add_argument("--daemons", default="1,2", help="daemon process counts to run the workload with (default 1,2)")
    bench.add_argument("--idle-runs", type=int, default=0, help="also enrol this many runs on long waits and measure idle cost")
    bench.add_argument("--database", help="server to make the scratch database on (default: the configured one)")
    bench.add_argument("--redis", help="Redis to use (keys under <namespace>-bench)")
    bench.add_argument("--json", action="store_true", help="print only the JSON line")

    runs = sub.add_parser("runs", help="inspect and steer runs").add_subparsers(dest="runs_command", required=True)
    listing = command("list", cmd_runs, "list runs", runs)
    listing.add_argument("--status", action="append")
    listing.add_argument("--plan")
    listing.add_argument("--contact")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    for name, help in (("show", "a run's state"), ("timeline", "a run's timeline"), ("pause", "pause a run"),
                       ("resume", "resume a paused run"), ("retry", "retry a failed run")):  # fmt: skip
        command(name, cmd_runs, help, runs).add_argument("run_id")
    replay = command("replay", cmd_runs, "replay a run from its audit log and compare", runs)
    replay.add_argument("run_id")
    replay.add_argument("--record", action="store_true", help="journal the verdict (dry_run=False)")
    cancel = command("cancel", cmd_runs, "cancel a run", runs)
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="cancelled from the command line")

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    command("verify", cmd_audit_verify, "verify audit chains (all runs when none is named)", audit).add_argument("run_ids", nargs="*")
    export = command("export", cmd_audit_export, "a run's audit log as JSON (chain included) or a PDF report", audit)
    export.add_argument("run_id")
    export.add_argument("--format", choices=("json", "pdf"), default="json")
    export.add_argument("--output", help="file to write (default: standard output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeeError as exc:
        print(f"dee: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dee: cannot reach a service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
