"""The image's recipe, checked offline (no Docker daemon is needed): a multi-stage build from
the lock file, pinned base image and uv, a numeric non-root user, a HEALTHCHECK, and a build
context that holds what the COPY lines take and nothing else (no .venv, no .git)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Dockerfile
from tests.deploy.dockerignore import DockerIgnore
from tests.packaging.test_lock import locked_version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = Dockerfile.load(ROOT / "Dockerfile")
IGNORE = DockerIgnore.load(ROOT / ".dockerignore")


def build_context(root: Path, ignore: DockerIgnore) -> list[str]:
    """The files `docker build` would send: every file under `root` the ignore file keeps."""
    kept = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            relative = Path(folder, name).relative_to(root).as_posix()
            if not ignore.excludes(relative):
                kept.append(relative)
    return kept


def test_two_stages_and_the_runtime_takes_only_the_venv_and_the_project_from_the_build() -> None:
    build, runtime = DOCKERFILE.stages
    assert build.name == "build" and build.image == runtime.image
    copies = [c.words() for c in runtime.all("COPY")]
    assert copies == [["--from=build", "/opt/dee", "/opt/dee"], ["--from=build", "/opt/dee-project", "/app"]]
    assert not runtime.all("RUN")[1:], "the runtime stage only adds its user"


def test_the_base_image_and_uv_are_pinned_and_uv_is_the_one_the_lock_pins() -> None:
    for stage in DOCKERFILE.stages:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", stage.image), stage.image
    (arg,) = [a.text for a in DOCKERFILE.stages[0].all("ARG") if a.text.startswith("UV_VERSION=")]
    assert arg.partition("=")[2] == locked_version("uv")
    assert any('"uv==${UV_VERSION}"' in r.text for r in DOCKERFILE.stages[0].all("RUN"))


def test_everything_installed_comes_from_the_lock() -> None:
    syncs = [r.text for r in DOCKERFILE.stages[0].all("RUN") if "uv sync" in r.text]
    assert len(syncs) == 2 and all("--locked" in s and "--no-dev" in s for s in syncs)
    assert "--no-install-project" in syncs[0] and "--no-editable" in syncs[1]
    assert not any("pip install" in r.text and "uv==" not in r.text for s in DOCKERFILE.stages for r in s.all("RUN"))


def test_the_daemon_runs_as_a_numeric_unprivileged_user() -> None:
    runtime = DOCKERFILE.runtime
    (user,) = [u.text for u in runtime.all("USER")]
    uid, gid = user.split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 1000 and int(gid) >= 1000
    (adduser,) = [r.text for r in runtime.all("RUN")]
    assert f"--uid {uid}" in adduser and f"--gid {gid}" in adduser
    assert runtime.instructions.index(runtime.all("USER")[0]) > max(runtime.instructions.index(c) for c in runtime.all("COPY"))


def test_the_healthcheck_asks_the_metrics_server_the_image_exposes() -> None:
    runtime = DOCKERFILE.runtime
    (check,) = runtime.all("HEALTHCHECK")
    options, _, command = check.text.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    env = DOCKERFILE.runtime_env()
    exposed = {int(p) for e in runtime.all("EXPOSE") for p in e.words()}
    probe = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", command)
    assert probe is not None and int(probe.group(1)) in exposed and env["DEE_METRICS_HOST"] == "0.0.0.0"
    assert [e.words() for e in runtime.all("ENTRYPOINT")] == [["dee"]] and [c.words() for c in runtime.all("CMD")] == [["run"]]


def test_the_build_context_is_what_the_copy_lines_take_and_nothing_else() -> None:
    sources = DOCKERFILE.context_sources()
    assert sources == ["pyproject.toml", "uv.lock", "README.md", "LICENSE", "daemon", "plugins"]
    for path in (".venv/bin/python", ".git", ".git/HEAD", "tests/conftest.py", ".mypy_cache/x", "dist/dee.whl",
                 "daemon/dee/__pycache__/engine.cpython-311.pyc", "daemon/dee.egg-info/PKG-INFO"):  # fmt: skip
        assert IGNORE.excludes(path), path
    tracked = subprocess.run(["git", "ls-files", "-z", *sources], cwd=ROOT, capture_output=True, check=True).stdout
    needed = [p for p in tracked.decode().split("\0") if p]
    assert len(needed) > 100 and not [p for p in needed if IGNORE.excludes(p)]
    context = build_context(ROOT, IGNORE)
    assert set(needed) <= set(context)
    assert not [p for p in context if not any(p == s or p.startswith(s + "/") for s in sources)]
    assert sum((ROOT / p).stat().st_size for p in context) < 8_000_000  # the lock and the sources, not a venv


MOBY_CASES = [  # from moby/patternmatcher's TestMatches (pattern, path, matched)
    ("**", "dir/file", True), ("dir/**", "dir/dir2/file", True), ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True), ("**/file", "dir/dir/file", True), ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False), ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False),
    ("a[b-d]e", "ace", True), ("a[^b-d]e", "aze", True), ("a[b-d]e", "aae", False), (".*", "foo", False),
    ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True), ("a\\\\", "a\\", True), ("abc/**", "abc", False),
    ("**/.foo", "bar.foo", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True), ("a\\*b", "a*b", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "matched"), MOBY_CASES)
def test_the_ignore_rules_match_as_dockers_own(pattern: str, path: str, matched: bool) -> None:
    assert DockerIgnore([pattern]).excludes(path) is matched


def test_a_later_pattern_decides_and_an_exception_lets_a_directory_back_in() -> None:
    assert not DockerIgnore(["**", "!util/docker/web"]).excludes("util/docker/web/foo")
    assert DockerIgnore(["**", "!util/docker/web", "util/docker/web/foo"]).excludes("util/docker/web/foo")
    assert DockerIgnore(["*"]).excludes("daemon/dee/engine.py")  # `*` excludes the top directory, hence its files
    assert not DockerIgnore(["*", "!daemon"]).excludes("daemon/dee/engine.py")
