"""`dee simulate` and `dee bench`: a plan run for simulated contacts, and the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import msgspec

from dee.config import EngineConfig
from dee.ops.cli.output import progress
from dee.ops.cli.project import templates_for
from dee.project.plans import load_plan


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    simulate = sub.add_parser("simulate", parents=[common], help="run a plan for simulated contacts on a manual clock")
    simulate.add_argument("plan")
    simulate.add_argument("--contacts", type=int, default=1000)
    simulate.add_argument("--days", type=int, default=10)
    simulate.add_argument("--memory", action="store_true", help="run in this process, without PostgreSQL and Redis")
    simulate.add_argument("--database", help="database to (re)create for the simulation (default: <config db>_simulate)")
    simulate.add_argument("--redis", help="Redis for the simulation (default: the configured one; keys under <namespace>-simulate)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    simulate.set_defaults(func=cmd_simulate)

    bench = sub.add_parser("bench", parents=[common], help="measure throughput on the fixed outreach-v2 workload")
    bench.add_argument("suite", nargs="?", choices=("workload", "ingress"), default="workload",
                       help="workload: the daemons (default); ingress: requests per second through the HTTP ingress")
    bench.add_argument("--concurrency", type=int, default=64, help="ingress: requests in flight (default 64)")
    bench.add_argument("--contacts", type=int, default=10_000)
    bench.add_argument("--daemons", default="1,2", help="daemon process counts to run the workload with (default 1,2)")
    bench.add_argument("--idle-runs", type=int, default=0, help="also enrol this many runs on long waits and measure idle cost")
    bench.add_argument("--database", help="server to make the scratch database on (default: the configured one)")
    bench.add_argument("--redis", help="Redis to use (keys under <namespace>-bench)")
    bench.add_argument("--json", action="store_true", help="print only the JSON line")
    bench.set_defaults(func=cmd_bench)


def cmd_simulate(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.ops import gc_tuning
    from dee.ops.simulate import format_report, run_simulation

    gc_tuning.tune()
    plan = load_plan(args.plan, templates=templates_for(config, args.plan))
    with progress(not args.quiet) as bar:
        report = asyncio.run(run_simulation(config, plan, args.contacts, args.days, args.memory, args.database, args.redis, bar))
    print(format_report(report, config.scheduler.tick_interval_ms))
    total = sum(report.outcomes.values())
    return 0 if report.replay_identical == total and report.chains_valid == total else 1


def cmd_bench(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.ops import gc_tuning
    from dee.ops.bench.run import run_bench

    gc_tuning.tune()
    if getattr(args, "config", None):  # the daemons the bench starts read the same file (they inherit its environment)
        os.environ["DEE_CONFIG"] = os.path.abspath(args.config)
    if args.database or args.redis:
        config = msgspec.structs.replace(config, database=args.database or config.database, redis=args.redis or config.redis)
    if args.suite == "ingress":
        return _bench_ingress(args, config)
    daemons = tuple(int(n) for n in args.daemons.split(","))

    def say(line: str) -> None:  # phase lines, not redrawn: fine in a log
        print(line, file=sys.stderr, flush=True)

    report = asyncio.run(run_bench(config, args.contacts, daemons, idle_runs=args.idle_runs, progress=say))
    if not args.json:
        print(report.table())
    print(report.json_line())
    return 0 if not report.problems() else 1


def _bench_ingress(args: argparse.Namespace, config: EngineConfig) -> int:
    import tempfile
    from pathlib import Path

    from dee.ops.bench.daemons import project_of
    from dee.ops.bench.ingress import run_ingress_bench
    from dee.ops.bench.run import bench_config

    project_of(config)
    logs = Path(tempfile.mkdtemp(prefix="dee-bench-ingress-"))
    print(f"dee bench ingress: {args.contacts:,} contacts; logs in {logs}", file=sys.stderr, flush=True)
    # the wall clock, as in production: a link's expiry is then checked without a database read
    deployment = bench_config(config, "bench_ingress")
    deployment = msgspec.structs.replace(deployment, scheduler=msgspec.structs.replace(deployment.scheduler, clock="wall"))
    figures = asyncio.run(run_ingress_bench(deployment, args.contacts, args.concurrency, logs,
                                            progress=lambda line: print(line, file=sys.stderr, flush=True)))  # fmt: skip
    if not args.json:
        print(figures.table())
    print(figures.json_line())
    return 0 if not figures.problems() else 1
