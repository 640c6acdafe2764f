"""The lock file: what `make venv`, `.ci/run` and the Dockerfile install must be what
pyproject.toml asks for, and the uv that installs it must be the one the lock pins."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def test_the_lock_file_matches_pyproject() -> None:
    # offline: the check compares the lock with pyproject.toml, it resolves nothing new
    done = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"uv.lock is out of date with pyproject.toml (run `make lock`):\n{done.stderr}"


def test_a_lock_that_disagrees_with_pyproject_fails_the_check(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (project / "pyproject.toml").write_text(pyproject.replace('"pluggy>=1.5"', '"pluggy>=1.6"'), encoding="utf-8")
    (project / "uv.lock").write_text((ROOT / "uv.lock").read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=project, capture_output=True, text=True)
    if "network was disabled" in done.stderr:  # telling needs a resolution, and the cache lacks some metadata
        done = subprocess.run([str(UV), "lock", "--check"], cwd=project, capture_output=True, text=True)
    assert done.returncode != 0 and "needs to be updated" in done.stderr, done.stderr


def test_the_makefile_bootstraps_the_uv_the_lock_pins() -> None:
    pinned = re.search(r"^UV_VERSION = (\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert pinned is not None and pinned.group(1) == locked_version("uv")


def test_everything_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "uv) sync --locked" in makefile.replace("$(UV", "uv")
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "--locked" in (ROOT / "Dockerfile").read_text(encoding="utf-8")
