"""EngineConfig (SPEC 3.1; dee.config): the TOML file, environment overrides and refusing typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from dee import (
    AuditConfig,
    ChannelsConfig,
    ConfigError,
    EmailChannelConfig,
    EngineConfig,
    SchedulerConfig,
    SenderConfig,
    VoiceChannelConfig,
)
from dee.config import PluginsConfig

TOML = "config/dee.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dee.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- the shipped file ------------------------------------------------------------------------


def test_the_shipped_toml_loads_with_its_values() -> None:
    config = EngineConfig.load(TOML, env={})
    assert config.database == "postgresql://postgres@127.0.0.1:5432/dee"
    assert config.redis == "redis://127.0.0.1:6379/0"
    assert config.config_dir == "config"  # the file's own folder
    assert config.scheduler == SchedulerConfig(tick_interval_ms=1000, max_runs_per_tick=500, partitions=16,
                                               partition_key=None, clock="wall", lease_ttl_ms=10_000)  # fmt: skip
    assert config.channels.email.adapter == "simulated"
    assert config.channels.email.tracking_domain == "t.dee.local"
    assert config.channels.email.unsubscribe_base == "https://t.dee.local/u"
    assert config.channels.email.sender == SenderConfig(email="outreach@example.com", name="DEE")
    assert config.channels.voice == VoiceChannelConfig(adapter="simulated", caller_id="+15550000000", api_url=None)
    assert config.audit == AuditConfig(retention_days=None, archive_to=None)
    assert config.plugins == PluginsConfig(disabled=())


def test_the_shipped_toml_matches_the_built_in_defaults() -> None:
    # but for the project directory, which a file sets to its own folder
    assert EngineConfig.load(TOML, env={}) == EngineConfig(config_dir="config")


def test_no_file_and_no_environment_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a folder that is no project
    assert EngineConfig.load(None, env={}) == EngineConfig()
    assert EngineConfig().project_dir() is None


def test_without_a_path_the_project_of_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, 'namespace = "here"\n')
    monkeypatch.chdir(tmp_path)
    config = EngineConfig.load(None, env={})
    assert config.namespace == "here" and config.config_dir == str(tmp_path)
    # the layout of this repository: the project in ./config
    nested = tmp_path / "outer"
    (nested / "config").mkdir(parents=True)
    write(nested / "config", 'namespace = "nested"\n')
    monkeypatch.chdir(nested)
    assert EngineConfig.load(None, env={}).namespace == "nested"


def test_dee_config_names_the_file_to_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'namespace = "from-env"\n')
    monkeypatch.chdir(tmp_path.parent)
    assert EngineConfig.load(None, env={"DEE_CONFIG": str(path)}).namespace == "from-env"


def test_a_relative_config_dir_is_relative_to_the_file_that_sets_it(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    path = write(tmp_path, 'config_dir = "project"\n')
    config = EngineConfig.load(path, env={})
    assert config.config_dir == str(tmp_path / "project")
    assert config.project_dir() == tmp_path / "project"


def test_a_missing_config_dir_is_one_error_naming_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, 'config_dir = "nowhere"\n')
    with pytest.raises(ConfigError, match=f"config_dir {tmp_path / 'nowhere'}: no such directory"):
        EngineConfig.load(path, env={}).project_dir()
    with pytest.raises(ConfigError, match="no such configuration file"):
        EngineConfig.load(tmp_path / "absent.toml", env={})


def test_a_toml_file_sets_nested_sections(tmp_path: Path) -> None:
    path = write(tmp_path, """
database = "memory://"
message_domain = "mail.acme.test"

[scheduler]
tick_interval_ms = 250
clock = "manual"
partition_key = "dee-2"

[channels.email]
adapter = "smtp"
smtp_port = 2525

[channels.email.sender]
name = "Acme Sales"

[audit]
retention_days = 365
archive_to = "s3://bucket/prefix"

[plugins]
disabled = ["dee_voice"]
""")
    config = EngineConfig.load(path, env={})
    assert config.database == "memory://"
    assert config.message_domain == "mail.acme.test"
    assert (config.scheduler.tick_interval_ms, config.scheduler.clock, config.scheduler.partition_key) == (250, "manual", "dee-2")
    assert config.scheduler.max_runs_per_tick == 500  # untouched keys keep their defaults
    assert (config.channels.email.adapter, config.channels.email.smtp_port) == ("smtp", 2525)
    assert config.channels.email.sender == SenderConfig(email="outreach@example.com", name="Acme Sales")
    assert config.audit == AuditConfig(retention_days=365, archive_to="s3://bucket/prefix")
    assert config.plugins.disabled == ("dee_voice",)


# ---- environment overrides -------------------------------------------------------------------


def test_environment_overrides_win_over_the_file() -> None:
    env = {
        "DATABASE_URL": "postgresql://db.internal/dee",
        "REDIS_URL": "redis://cache.internal:6380/2",
        "DEE_SCHEDULER_CLOCK": "manual",
        "DEE_SCHEDULER_TICK_INTERVAL_MS": "250",
        "DEE_CHANNELS_EMAIL_SENDER_NAME": "Acme Sales",
    }
    config = EngineConfig.load(TOML, env=env)
    assert config.database == "postgresql://db.internal/dee"
    assert config.redis == "redis://cache.internal:6380/2"
    assert config.scheduler.clock == "manual"
    assert config.scheduler.tick_interval_ms == 250
    assert config.channels.email.sender.name == "Acme Sales"
    assert config.channels.email.sender.email == "outreach@example.com"  # its sibling is untouched
    assert config.scheduler.partitions == 16


def test_the_tick_ms_alias_of_the_spec_sets_tick_interval_ms() -> None:
    assert EngineConfig.load(TOML, env={"DEE_SCHEDULER_TICK_MS": "500"}).scheduler.tick_interval_ms == 500


@pytest.mark.parametrize(
    ("name", "value", "path", "expected"),
    [
        ("DEE_SCHEDULER_MAX_RUNS_PER_TICK", "50", ("scheduler", "max_runs_per_tick"), 50),
        ("DEE_SCHEDULER_PARTITION_KEY", "dee-3", ("scheduler", "partition_key"), "dee-3"),
        ("DEE_CHANNELS_EMAIL_ADAPTER", "smtp", ("channels", "email", "adapter"), "smtp"),
        ("DEE_CHANNELS_EMAIL_SENDER_EMAIL", "sales@acme.test", ("channels", "email", "sender", "email"), "sales@acme.test"),
        ("DEE_CHANNELS_VOICE_CALLER_ID", "+15551112222", ("channels", "voice", "caller_id"), "+15551112222"),
        ("DEE_AUDIT_RETENTION_DAYS", "30", ("audit", "retention_days"), 30),
        ("DEE_MESSAGE_DOMAIN", "mail.acme.test", ("message_domain",), "mail.acme.test"),
        ("DEE_CONFIG_DIR", "/etc/dee", ("config_dir",), "/etc/dee"),
    ],
)
def test_every_field_can_be_overridden(name: str, value: str, path: tuple[str, ...], expected: object) -> None:
    node: object = EngineConfig.load(TOML, env={name: value})
    for part in path:
        node = getattr(node, part)
    assert node == expected


@pytest.mark.parametrize(
    ("name", "value", "path"),
    [
        ("DEE_CHANNELS_VOICE_CALLER_ID", "15551112222", ("channels", "voice", "caller_id")),
        ("DEE_CHANNELS_EMAIL_SENDER_NAME", "true", ("channels", "email", "sender", "name")),
        ("DEE_SCHEDULER_PARTITION_KEY", "2", ("scheduler", "partition_key")),
    ],
)
def test_string_fields_keep_values_that_look_like_numbers_or_booleans(name: str, value: str, path: tuple[str, ...]) -> None:
    node: object = EngineConfig.load(TOML, env={name: value})
    for part in path:
        node = getattr(node, part)
    assert node == value


def test_boolean_and_integer_strings_convert_for_typed_fields(tmp_path: Path) -> None:
    config = EngineConfig.load(None, env={"DEE_CHANNELS_EMAIL_SMTP_PORT": "2525", "DEE_SCHEDULER_PARTITIONS": "32"})
    assert (config.channels.email.smtp_port, config.scheduler.partitions) == (2525, 32)


def test_variables_outside_the_configuration_are_ignored() -> None:
    env = {"DEE_TEST_X": "1", "DEE_TEST_PG": "postgresql://x", "HOME": "/root", "DEE_BENCH_CONTACTS": "5"}
    assert EngineConfig.load(TOML, env=env) == EngineConfig.load(TOML, env={})


def test_a_typo_inside_a_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(TOML, env={"DEE_SCHEDULER_TYPO": "1"})
    assert str(caught.value) == "environment variable DEE_SCHEDULER_TYPO names no field of [scheduler]"


def test_a_typo_in_a_nested_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(TOML, env={"DEE_CHANNELS_EMAIL_SENDR_NAME": "x"})
    assert "DEE_CHANNELS_EMAIL_SENDR_NAME" in str(caught.value)


def test_an_invalid_value_from_the_environment_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(TOML, env={"DEE_SCHEDULER_CLOCK": "sundial"})
    assert "scheduler.clock" in str(caught.value)
    with pytest.raises(ConfigError):
        EngineConfig.load(TOML, env={"DEE_SCHEDULER_TICK_INTERVAL_MS": "fast"})


def test_the_real_process_environment_is_used_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEE_SCHEDULER_CLOCK", "manual")
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/0")
    config = EngineConfig.load(TOML)
    assert (config.scheduler.clock, config.redis) == ("manual", "redis://from-env:6379/0")


# ---- the file must not hide typos either -----------------------------------------------------


def test_an_unknown_key_in_a_toml_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[scheduler]\ntick_intervall_ms = 500\n")
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(path, env={})
    assert "tick_intervall_ms" in str(caught.value)


def test_an_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'databse = "memory://"\n')
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(path, env={})
    assert "databse" in str(caught.value)


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[schedular]\nclock = \"manual\"\n")
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(path, env={})
    assert "schedular" in str(caught.value)


def test_an_unknown_key_in_a_nested_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[channels.email.sender]\nnmae = \"x\"\n")
    with pytest.raises(ConfigError) as caught:
        EngineConfig.load(path, env={})
    assert "nmae" in str(caught.value)


def test_a_wrongly_typed_value_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[scheduler]\npartitions = "sixteen"\n')
    with pytest.raises(ConfigError):
        EngineConfig.load(path, env={})


def test_a_missing_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        EngineConfig.load(tmp_path / "nope.toml", env={})
    assert "nope.toml" in str(missing.value)
    with pytest.raises(ConfigError):
        EngineConfig.load(write(tmp_path, "[scheduler\n"), env={})


def test_the_structs_refuse_unknown_fields_in_code_too() -> None:
    with pytest.raises(TypeError):
        SchedulerConfig(tick_intervall_ms=5)  # type: ignore[call-arg]
    config = EngineConfig(channels=ChannelsConfig(email=EmailChannelConfig(adapter="smtp")))
    assert config.channels.email.adapter == "smtp"


def test_lists_come_from_the_environment_comma_separated() -> None:
    config = EngineConfig.load(None, env={"DEE_PLUGINS_DISABLED": "dee_voice, dee_acme",
                                          "DEE_CHANNELS_VOICE_CALLING_HOURS": "09:00,20:00"})  # fmt: skip
    assert config.plugins.disabled == ("dee_voice", "dee_acme")
    assert config.channels.voice.calling_hours == ("09:00", "20:00")


def test_the_configuration_reference_documents_every_key_and_its_variable() -> None:
    import msgspec

    reference = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")

    def walk(struct: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for f in msgspec.structs.fields(struct):
            nested = isinstance(f.type, type) and issubclass(f.type, msgspec.Struct)
            out += walk(f.type, (*prefix, f.name)) if nested else [(*prefix, f.name)]
        return out

    # plugins' own tables are set per plugin and key
    variables = {("plugins", "settings"): "DEE_PLUGINS_<NAME>_<KEY>"}
    for path in walk(EngineConfig, ()):
        variable = variables.get(path, f"DEE_{'_'.join(path).upper()}")
        assert f"`{path[-1]}`" in reference, f"docs/configuration.md lacks the key {'.'.join(path)}"
        assert f"`{variable}`" in reference, f"docs/configuration.md lacks {variable}"


def test_periodic_checkpoints_need_a_signing_key() -> None:
    from dee.config import AuditConfig

    with pytest.raises(ValueError, match=r"checkpoint_interval_s needs audit\.signing_key_file"):
        AuditConfig(checkpoint_interval_s=60)
    with pytest.raises(ValueError, match="checkpoint_interval_s"):
        AuditConfig(checkpoint_interval_s=-1, signing_key_file="/k")
    assert AuditConfig(checkpoint_interval_s=60, signing_key_file="/k").checkpoint_interval_s == 60
