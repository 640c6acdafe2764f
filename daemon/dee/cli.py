"""The `dee` command. Each subcommand is a small function; errors print one clear line.

Exit codes: 0 success, 1 the check failed (invalid plan, a replay diverged), 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

import msgspec

from dee.config import EngineConfig
from dee.errors import DeeError, PlanFileError, PlanValidationError
from dee.plan.files import load_plan
from dee.plan.graph import to_dot, to_mermaid
from dee.plugin.manager import PluginManager


def cmd_plugins(args: argparse.Namespace) -> int:
    manager = PluginManager.load(disabled=load_config(args).plugins.disabled)
    rows = manager.describe()
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
    from dee.plan.create import prepare_plan

    plan = load_plan(args.file, templates=_templates(args))
    compiled = prepare_plan(plan, PluginManager.load(), _templates(args))
    print(to_dot(compiled) if args.format == "dot" else to_mermaid(compiled))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from dee.engine import Engine
    from dee.simulate import format_report, progress_bar, simulate

    base = load_config(args)
    config = msgspec.structs.replace(
        base,
        database="memory://",
        scheduler=msgspec.structs.replace(base.scheduler, clock="manual"),
    )
    plan = load_plan(args.plan, templates=_templates(args))

    async def go() -> int:
        async with Engine(config, scheduler=True) as engine:
            report = await simulate(engine, plan, args.contacts, args.days, progress=None if args.quiet else progress_bar)
        print(format_report(report, config.scheduler.tick_interval_ms))
        total = sum(report.outcomes.values())
        return 0 if report.replay_identical == total and report.chains_valid == total else 1

    return asyncio.run(go())


def _templates(args: argparse.Namespace) -> object:
    from dee.templates import load_directory

    return load_directory(load_config(args).config_dir)


def load_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig.load(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dee", description="DEE, the Deterministic Execution Engine")
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults + environment)")
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list installed plugins and where they came from")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    plan = sub.add_parser("plan", help="plan files").add_subparsers(dest="plan_command", required=True)
    validate = plan.add_parser("validate", help="check plan files against every validation rule")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_plan_validate)
    graph = plan.add_parser("graph", help="print the plan as a Mermaid or Graphviz graph")
    graph.add_argument("file")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(func=cmd_plan_graph)

    simulate = sub.add_parser("simulate", help="run a plan for simulated contacts on a manual clock")
    simulate.add_argument("plan")
    simulate.add_argument("--contacts", type=int, default=1000)
    simulate.add_argument("--days", type=int, default=10)
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeeError as exc:
        print(f"dee: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

