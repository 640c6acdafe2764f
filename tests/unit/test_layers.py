"""The folders are layers and dependencies point one way (down this list): a package imports
only the layers named for it, at module level or inside a function alike. The kernel and the
plan model know nothing of storage, buses, schedulers or processes; built-in plugins use only
what a third-party plugin may."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "daemon" / "dee"
BASE = {"errors", "ids", "redact", "routing", "logfields"}

# what each layer may import, besides itself
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "ids": set(), "redact": set(), "routing": set(), "logfields": set(),
    "plan": BASE,
    "kernel": BASE | {"plan"},
    "bus": BASE | {"kernel"},
    "plugin": BASE | {"plan", "kernel", "bus", "config"},
    "config": BASE | {"limits"},
    "limits": BASE | {"kernel", "bus"},
    "metrics": BASE,
    "project": BASE | {"config", "plan", "plugin"},
    "records": BASE | {"kernel", "plan"},
    "privacy": BASE | {"config", "kernel"},
    "reports": BASE | {"kernel", "plan", "records"},
    "shell": BASE | {"privacy", "config", "kernel", "plan", "plugin", "bus", "records", "limits"},
    "stores": BASE | {"privacy", "config", "kernel", "plan", "plugin", "bus", "records", "shell"},
    "scheduler": BASE | {"privacy", "config", "kernel", "plan", "plugin", "bus", "stores", "metrics", "records", "shell", "limits"},
    "backends": BASE | {"privacy", "config", "kernel", "plan", "plugin", "bus", "stores", "scheduler", "metrics", "records", "project",
                        "shell", "limits"},
    "engine": BASE | {"privacy", "config", "kernel", "plan", "plugin", "backends", "records", "reports", "project", "shell"},
    "ingress": BASE | {"config", "kernel", "plan", "plugin", "bus", "metrics", "records", "engine", "shell"},
    "archive": BASE | {"config", "kernel", "stores"},
    "checkpoint": BASE | {"config", "kernel", "stores"},
    "ops": BASE | {"privacy", "config", "kernel", "plan", "plugin", "bus", "stores", "scheduler", "metrics", "records", "reports",
                   "project", "backends", "engine", "shell", "ingress", "archive", "checkpoint"},
    "__init__": BASE | {"config", "engine", "kernel", "plan", "project", "records"},
    "__main__": {"ops"},
}  # fmt: skip
# what a plugin may use: the same as any third-party plugin
PLUGIN_API = ("dee.plugin", "dee.kernel", "dee.plan.model", "dee.errors")


def imported(path: Path) -> set[str]:
    """Every `dee...` module a file imports, wherever in the file the import is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dee":
                found |= {f"dee.{alias.name}" for alias in node.names}
            elif node.module.startswith("dee."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dee.")}
    return found


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_every_layer_is_known() -> None:
    layers = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert layers - set(ALLOWED) == set(), "a new top-level module or package needs its place in ALLOWED"


def test_dependencies_point_one_way() -> None:
    wrong: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        own = parts[0]
        for module in imported(path):
            target = layer(module)
            if target != own and target not in ALLOWED[own]:
                wrong[own].add(f"{'/'.join(parts)}.py imports {module}")
    assert not wrong, dict(wrong)


def test_the_layers_form_no_cycle() -> None:
    # ALLOWED itself must be acyclic, or "one way" would mean nothing
    state: dict[str, int] = {}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert state.get(node) != 1, f"cycle: {' -> '.join((*trail, node))}"
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(ALLOWED[node]):
            visit(nxt, (*trail, node))
        state[node] = 2

    for node in sorted(ALLOWED):
        visit(node, ())


def test_built_in_plugins_use_only_the_plugin_api() -> None:
    for path in (ROOT / "plugins").rglob("*.py"):
        for module in imported(path):
            assert module.startswith(PLUGIN_API), f"{path.relative_to(ROOT)} imports {module}"
