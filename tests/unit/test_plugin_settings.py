"""A plugin's own settings (`[plugins.<name>]`) and `dee plugins` naming a plugin that does not
load: installed plugins are real distributions on the path, found through their entry points by
a `dee` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dee import EngineConfig
from dee.errors import ConfigError

PLUGIN_MODULE = '''
from dee.plugin import hookimpl


@hookimpl
def dee_channel_adapters(config):
    settings = config.plugins.section("needs_key")
    if "api_key" not in settings:
        raise ValueError("api_key is not set")
    return []
'''


def install(site: Path, name: str, target: str, module: str | None = None) -> None:
    """A distribution `name` with one `dee` entry point to `target`, as pip would leave it."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dee]\n{name} = {target}\n")
    if module is not None:
        (site / f"{target}.py").write_text(module)


def dee(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    return subprocess.run([sys.executable, "-m", "dee", *args], capture_output=True, text=True, env=environ, timeout=60)


def test_plugin_tables_are_each_plugins_section(tmp_path: Path) -> None:
    file = tmp_path / "dee.toml"
    file.write_text('[plugins]\ndisabled = ["x"]\n\n[plugins.dee_sendgrid]\napi_key = "SG.secret"\ntimeout_s = 5\n')
    config = EngineConfig.load(file, env={"DEE_PLUGINS_DEE_SENDGRID_BASE_URL": "http://127.0.0.1:9"})
    assert config.plugins.disabled == ("x",)
    assert config.plugins.section("dee_sendgrid") == {"api_key": "SG.secret", "timeout_s": 5, "base_url": "http://127.0.0.1:9"}
    assert config.plugins.section("absent") == {}
    assert "SG.secret" not in repr(config) and "timeout_s': 5" in repr(config.plugins)
    # without a table in the file, the first word names the plugin
    assert EngineConfig.load(None, env={"DEE_PLUGINS_ACME_TOKEN": "t"}).plugins.section("acme") == {"token": "t"}


def test_a_plugin_key_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "dee.toml"
    file.write_text('[plugins]\ndisabeld = ["x"]\n')
    with pytest.raises(ConfigError, match=r"plugins.disabeld is not a table"):
        EngineConfig.load(file, env={})


def test_dee_plugins_names_each_plugin_that_fails_and_lists_the_rest(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, "broken", "no_such_module_anywhere")
    install(site, "needs_key", "needs_key_plugin", PLUGIN_MODULE)
    done = dee(site, "plugins")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "dee_email  (entry point of" in done.stdout  # the rest are listed
    assert "broken\n    FAILED: plugin 'broken': failed to import no_such_module_anywhere" in done.stdout
    assert "FAILED: plugin 'needs_key': dee_channel_adapters raised ValueError: api_key is not set" in done.stdout
    # its section, from the deployment's file, is what the hook reads
    config = tmp_path / "dee.toml"
    config.write_text('[plugins.needs_key]\napi_key = "k"\n')
    done = dee(site, "--config", str(config), "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert "error" not in rows["needs_key"] and "error" in rows["broken"]
    assert done.returncode == 1


def test_dee_run_still_refuses_to_start_without_a_plugin_that_does_not_import(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, "broken", "no_such_module_anywhere")
    done = dee(site, "plan", "validate", "config/plans/welcome-sequence.yaml")
    assert done.returncode == 2
    assert done.stderr.strip() == ("dee: plugin 'broken': failed to import no_such_module_anywhere: "
                                   "ModuleNotFoundError(\"No module named 'no_such_module_anywhere'\")")  # fmt: skip
