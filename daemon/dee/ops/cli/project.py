"""`dee init`, `dee plan validate|graph`, `dee schema`, `dee plugins`: a project's files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dee.config import EngineConfig
from dee.errors import PlanFileError, PlanValidationError
from dee.ops.cli.output import as_json
from dee.plan.graph import to_dot, to_mermaid
from dee.plan.prepare import prepare_plan
from dee.plan.spec import TemplateStore
from dee.plugin.manager import PluginManager
from dee.project import init_project, project_of
from dee.project.plans import load_plan
from dee.project.templates import ChainedTemplateStore, load_directory

NEXT_STEPS = """
Next:
  cd {dir}
  dee plan validate plans/*.yaml
  dee simulate plans/sales-outreach-v2.yaml --memory   # the whole engine in memory, nothing to install
Edit dee.toml for your PostgreSQL and Redis, then `dee migrate` and `dee run`."""


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    init = sub.add_parser("init", parents=[common], help="write a starter project (dee.toml, plans, templates, scripts)")
    init.add_argument("dir", nargs="?", default=".", help="where (default: the current directory)")
    init.add_argument("--force", action="store_true", help="replace files that exist")
    init.set_defaults(func=cmd_init)

    plan = sub.add_parser("plan", parents=[common], help="plan files").add_subparsers(dest="plan_command", required=True)
    validate = plan.add_parser("validate", parents=[common], help="check plan files against every validation rule")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--json", action="store_true", help="the verdicts as JSON")
    validate.set_defaults(func=cmd_plan_validate)
    graph = plan.add_parser("graph", parents=[common], help="print a plan as a Mermaid or Graphviz graph")
    graph.add_argument("file")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(func=cmd_plan_graph)

    sub.add_parser("schema", parents=[common], help="print the JSON Schema of the wire messages").set_defaults(func=cmd_schema)
    plugins = sub.add_parser("plugins", parents=[common], help="list installed plugins and what they provide")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)


def cmd_init(args: argparse.Namespace, config: EngineConfig) -> int:
    written = init_project(args.dir, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(NEXT_STEPS.format(dir=args.dir))
    return 0


def templates_for(config: EngineConfig, plan_file: str | None = None) -> TemplateStore:
    """The configured project's templates, else those of the plan file's own project, then the
    plugins' stores."""
    project = config.project_dir()
    if project is None and plan_file is not None:
        project = project_of(plan_file)
    plugins = PluginManager.load(disabled=config.plugins.disabled)
    local = [load_directory(project)] if project is not None else []
    return ChainedTemplateStore([*local, *plugins.template_stores(config).values()])


def cmd_plan_validate(args: argparse.Namespace, config: EngineConfig) -> int:
    verdicts: list[dict[str, Any]] = []
    for path in args.files:
        try:
            plan = load_plan(path, templates=templates_for(config, path))
        except PlanValidationError as exc:
            verdicts.append({"file": path, "valid": False, "problems": [str(p) for p in exc.problems]})
        except PlanFileError as exc:
            verdicts.append({"file": path, "valid": False, "problems": [str(exc)]})
        else:
            verdicts.append({"file": path, "valid": True, "id": plan.id, "steps": len(plan.steps), "checksum": plan.checksum})
    if args.json:
        print(json.dumps(verdicts, indent=2))
    else:
        for v in verdicts:
            if v["valid"]:
                print(f"{v['file']}: ok  ({v['id']}, {v['steps']} steps, checksum {v['checksum'][:12]})")
            else:
                print(f"{v['file']}: invalid, {len(v['problems'])} problem(s)")
                print("\n".join(f"  - {p}" for p in v["problems"]))
    return 0 if all(v["valid"] for v in verdicts) else 1


def cmd_plan_graph(args: argparse.Namespace, config: EngineConfig) -> int:
    templates = templates_for(config, args.file)
    plugins = PluginManager.load(disabled=config.plugins.disabled)
    compiled = prepare_plan(load_plan(args.file, plugins=plugins, templates=templates), plugins.step_types(), templates)
    print(to_dot(compiled) if args.format == "dot" else to_mermaid(compiled))
    return 0


def cmd_schema(args: argparse.Namespace, config: EngineConfig) -> int:
    from dee.bus.messages import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_plugins(args: argparse.Namespace, config: EngineConfig) -> int:
    """Every installed plugin and what it provides; one that fails to load, or whose hooks
    raise with this deployment's config, is named with its error (exit 1), never a traceback."""
    manager, failed = PluginManager.survey(disabled=config.plugins.disabled)
    rows = manager.describe(config) + [{"name": e.plugin, "error": str(e), "provides": []} for e in failed]
    if args.json:
        print(as_json(rows))
    else:
        for row in rows:
            where = f"  ({row['source']}; module {row['module']})" if "source" in row else ""
            print(f"{row['name']}{where}")
            for item in row["provides"]:
                print(f"    {item}")
            if "error" in row:
                print(f"    FAILED: {row['error']}")
    return 1 if any("error" in row for row in rows) else 0
