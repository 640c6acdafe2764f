"""docker-compose.yml read as Compose reads it (YAML anchors and merge keys resolved), and what
the tests ask of it: a service's environment and mounts, and the environment a DEE container
runs with (the image's ENV lines, then the service's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dee.project import init_project
from tests.deploy.dockerfile import Dockerfile

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def bind(self) -> bool:
        return self.source.startswith((".", "/"))


def load() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (the list form `KEY=VALUE` too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> list[Mount]:
    """The short syntax `SOURCE:TARGET[:ro]` of a service's volumes."""
    found = []
    for spec in service.get("volumes") or []:
        assert isinstance(spec, str), f"only the short volume syntax is read here: {spec!r}"
        source, target, *mode = spec.split(":")
        found.append(Mount(source, target, mode == ["ro"]))
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The file of this checkout a bind mount puts at `container_path`."""
    for mount in mounts(service):
        if mount.bind and (container_path == mount.target or container_path.startswith(mount.target + "/")):
            return (ROOT / mount.source / container_path[len(mount.target) :].lstrip("/")).resolve()
    raise AssertionError(f"nothing is mounted at {container_path}")


def container_env(service: dict[str, Any], app_dir: Path) -> dict[str, str]:
    """What a DEE container of `service` sees: the image's ENV, then the service's environment,
    with the image's project (`/app`, which `dee init` writes at build time) written to `app_dir`."""
    image_env = Dockerfile.load(ROOT / "Dockerfile").runtime_env()
    assert image_env["DEE_CONFIG"] == "/app/dee.toml", image_env
    if not (app_dir / "dee.toml").exists():
        init_project(app_dir)
    env = {k: v for k, v in image_env.items() if k != "PATH"}
    env["DEE_CONFIG"] = str(app_dir / "dee.toml")
    return {**env, **environment(service)}
