"""The package stands alone: the wheel, installed into a fresh venv with the locked dependencies
and used from an empty directory outside the repository, initialises a project, validates its
plans, simulates, and reads a deployment without any template of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dee import Engine, load_plan
from dee.ops.scratch import scratch_deployment
from tests.integration.conftest import deployment_config

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def uv(*args: str | Path, cwd: Path = ROOT) -> None:
    env = {**os.environ, "UV_COMPILE_BYTECODE": "1"}
    done = subprocess.run([str(UV), *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"uv {' '.join(map(str, args))} failed:\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the repository with the built wheel and the locked dependencies."""
    base = tmp_path_factory.mktemp("wheel")
    uv("build", "--wheel", "--out-dir", base / "dist")
    wheel = next((base / "dist").glob("dee-*.whl"))
    uv("venv", "--quiet", "--python", sys.executable, base / "venv")
    requirements = base / "requirements.txt"
    uv("export", "--frozen", "--no-dev", "--no-emit-project", "--quiet", "--output-file", requirements)
    python = base / "venv" / "bin" / "python"
    try:  # what `make venv` cached is enough; a machine without that cache downloads the same pins
        uv("pip", "install", "--quiet", "--offline", "--python", python, "-r", requirements)
    except AssertionError:
        uv("pip", "install", "--quiet", "--python", python, "-r", requirements)
    uv("pip", "install", "--quiet", "--no-deps", "--python", python, wheel)
    yield base / "venv" / "bin"


def run(bin_dir: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEE_") and k not in ("PYTHONPATH", "DATABASE_URL", "REDIS_URL")}
    return subprocess.run([str(bin_dir / "dee"), *args], cwd=cwd, capture_output=True, text=True, env={**clean, **(env or {})})


def test_the_installed_package_imports_from_its_own_venv(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(installed / "python"), "-c", "import dee, dee_email; print(dee.__file__, dee_email.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert str(ROOT) not in done.stdout and str(installed.parent) in done.stdout


def test_init_validate_and_simulate_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    version = run(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("dee 0.1.0")
    init = run(installed, tmp_path, "init", "project")
    assert init.returncode == 0, init.stderr
    project = tmp_path / "project"
    assert sorted(p.name for p in project.iterdir()) == ["dee.toml", "plans", "schema", "scripts", "templates"]
    again = run(installed, tmp_path, "init", "project")
    assert again.returncode == 2 and "would overwrite" in again.stderr and len(again.stderr.splitlines()) == 1
    validate = run(installed, project, "plan", "validate", "plans/sales-outreach-v2.yaml", "plans/welcome-sequence.yaml")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert validate.stdout.count(": ok") == 2
    simulate = run(installed, project, "simulate", "plans/sales-outreach-v2.yaml", "--memory", "--contacts", "20", "--days", "10")
    assert simulate.returncode == 0, simulate.stderr
    assert "replay: 20/20 runs identical" in simulate.stdout and "audit chains: 20/20 valid" in simulate.stdout
    assert "\r" not in simulate.stderr  # no progress frames when stderr is not a terminal


def test_a_wrong_config_dir_is_one_error_naming_the_path(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "dee.toml").write_text('config_dir = "missing"\n', encoding="utf-8")
    done = run(installed, tmp_path, "plan", "validate", "plans/x.yaml")
    assert done.returncode == 2
    missing = tmp_path / "missing"
    assert done.stderr.splitlines() == [f"dee: config_dir {missing}: no such directory (plans, templates and scripts live there)"]


async def test_read_only_commands_need_no_local_templates(installed: Path, tmp_path: Path) -> None:
    config = deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}")
    async with scratch_deployment(config):
        async with Engine(config, scheduler=True) as engine:
            contact = {"id": "c-1", "email": "a@example.com", "attributes": {"first_name": "Kim"}}
            run_view = await engine.execute(load_plan(ROOT / "config/plans/welcome-sequence.yaml"), contact, {"product": "DEE"})
            await engine.run_until_idle()
        env = {"DATABASE_URL": config.database, "REDIS_URL": config.redis, "DEE_NAMESPACE": config.namespace,
               "DEE_SCHEDULER_PARTITIONS": str(config.scheduler.partitions)}  # fmt: skip
        listing = run(installed, tmp_path, "runs", "list", "--json", env=env)
        assert listing.returncode == 0, listing.stderr
        assert run_view.id in listing.stdout
        verify = run(installed, tmp_path, "audit", "verify", env=env)
        assert verify.returncode == 0 and verify.stdout.strip().endswith("1/1 chains valid"), verify.stdout + verify.stderr


def test_the_sendgrid_plugin_installs_beside_it_and_is_listed(installed: Path, tmp_path: Path) -> None:
    """`pip install ./contrib/dee-sendgrid` is all a deployment does: its entry point makes
    `dee plugins` list the adapter (and asking with the plugin selected but no key names it)."""
    source = tmp_path / "dee-sendgrid"  # a copy: building leaves build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "contrib" / "dee-sendgrid", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    uv("pip", "install", "--quiet", "--no-deps", "--python", installed / "python", source)
    done = run(installed, tmp_path, "plugins", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["dee_sendgrid"]["provides"] == ["email adapter sendgrid"]
    assert rows["dee_sendgrid"]["source"] == "entry point of dee-sendgrid 0.1.0"
    selected = run(installed, tmp_path, "plugins", env={"DEE_CHANNELS_EMAIL_ADAPTER": "sendgrid"})
    assert selected.returncode == 1
    assert "FAILED: plugin 'dee_sendgrid': dee_channel_adapters raised ValueError: [plugins.dee_sendgrid] needs api_key" in selected.stdout
