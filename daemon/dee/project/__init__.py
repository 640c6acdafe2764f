"""DEE projects: a folder with a `dee.toml`, `plans/`, `templates/`, `scripts/` and `schema/`.

`dee init DIR` writes the starter project shipped inside the package (`dee/starter`, which the
repository's `config/` folder links to). Commands and engines started without a configuration
find their project from the working directory: the folder itself when it holds a `dee.toml`,
else its `config/` folder when that does (the layout of this repository).
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from dee.config import CONFIG_FILE, find_project
from dee.errors import ConfigError

STARTER_FOLDERS = ("plans", "templates", "scripts", "schema")
__all__ = ["STARTER_FOLDERS", "find_project", "init_project", "project_of", "starter", "starter_files"]


def project_of(plan_file: str | os.PathLike[str]) -> Path | None:
    """The project a plan file belongs to: the folder holding its `plans/` folder, when that
    folder is a project (it has a `dee.toml` or a `templates/` folder)."""
    plans = Path(plan_file).resolve().parent
    root = plans.parent
    if plans.name == "plans" and ((root / CONFIG_FILE).is_file() or (root / "templates").is_dir()):
        return root
    return None


def starter() -> Traversable:
    """The starter project shipped with the package."""
    return resources.files("dee").joinpath("starter")


def starter_files() -> list[tuple[str, bytes]]:
    """Every file of the starter project as (relative path, content), in a fixed order."""
    root = starter()
    files = [(CONFIG_FILE, root.joinpath(CONFIG_FILE).read_bytes())]
    for folder in STARTER_FOLDERS:
        entries = sorted(root.joinpath(folder).iterdir(), key=lambda e: e.name)
        files += [(f"{folder}/{e.name}", e.read_bytes()) for e in entries if e.is_file()]
    return files


def init_project(target: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Write the starter project into `target` (created if needed); returns the files written.

    Refuses, writing nothing, when any of the files already exists, unless `force`: a project
    someone has edited is never overwritten by accident."""
    root = Path(target)
    files = starter_files()
    if not force:
        existing = [str(root / name) for name, _ in files if (root / name).exists()]
        if existing:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise ConfigError(f"{root}: would overwrite {', '.join(existing[:3])}{more} (use --force to replace them)")
    written = []
    for name, content in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
