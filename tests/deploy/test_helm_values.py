"""The chart's values: its schema (self-contained draft-07, applied before rendering, refusing
secrets in `config` and unknown keys), the dee.toml it renders (a configuration DEE loads, the
Secret's keys landing on the right fields), the project ConfigMap (a DEE project), partition
keys from StatefulSet ordinals, the alerts' metrics, and helm lint."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from dee.config import EngineConfig
from dee.metrics import Metrics
from dee.project.plans import load_plan
from dee.project.templates import load_directory
from dee.scheduler.coordinator import parse_partition_key
from tests.deploy.chart import CHART, FULL, RELEASE, SECRET_VALUES, VALUE_SETS, Release, render, secret_data
from tests.deploy.config_schema import SCHEMA_FILE, config_schema

Releases = Callable[[str], Release]


def test_the_config_schema_is_derived_from_engine_config() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["properties"]["config"] == config_schema(), (
        "values.schema.json is out of date with dee/config.py: run `.venv/bin/python -m tests.deploy.config_schema`"
    )


def test_the_schema_is_self_contained_draft_07_and_accepts_the_defaults(chart: helm.Chart) -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#" and '"$ref"' not in text
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(defaults)
    for values in VALUE_SETS.values():
        chart.validate_schema(values)


BAD_VALUES = [
    ({"config": {"channels": {"email": {"smtp_password": "hunter2"}}}}, "/config/channels/email/smtp_password"),
    ({"config": {"database": "postgresql://dee:hunter2@db/dee"}}, "/config/database"),
    ({"config": {"ingress": {"signing_key": "k"}}}, "/config/ingress/signing_key"),
    ({"config": {"metrics": {"port": 9000}}}, "/config/metrics"),
    ({"config": {"scheduler": {"tick_intervall_ms": 500}}}, "tick_intervall_ms"),
    ({"config": {"scheduler": {"partitions": "sixteen"}}}, "/config/scheduler/partitions"),
    ({"config": {"chanels": {}}}, "chanels"),
    ({"secrets": {"databaseUrl": ""}}, "/secrets/databaseUrl"),
    ({"secrets": {"databaseUrl": "mysql://db/dee"}}, "/secrets/databaseUrl"),
    ({"replicas": 3}, "replicas"),
    ({"runAsUser": 0}, "/runAsUser"),
    ({"migrations": {"mode": "job"}}, "/migrations/mode"),
    ({"project": {"plans": {"../escape.yaml": "id: x"}}}, "invalid propertyName '../escape.yaml'"),
    ({"ingress": {"kubernetesIngress": {"enabled": True}}}, "/ingress/kubernetesIngress/hosts"),
    ({"image": {"tag": "latest@sha256:0"}}, "/image/tag"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_the_schema_refuses_bad_values_before_rendering(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE)
    assert where in str(refused.value)


def loaded_config(release: Release, tmp_path: Path, secret: dict[str, str]) -> EngineConfig:
    """The configuration the daemon container would load: its dee.toml, its plain env values,
    and its secretKeyRefs resolved from `secret`."""
    toml = tmp_path / "dee.toml"
    toml.write_text(release.named("ConfigMap", f"{RELEASE}-dee-config")["data"]["dee.toml"], encoding="utf-8")
    container = release.of_kind("StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env.pop("DEE_CONFIG") == "/etc/dee/config/dee.toml"
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and ref["key"] in secret:
            env[e["name"]] = secret[ref["key"]]
    return EngineConfig.load(toml, env=env)


def test_the_secret_keys_land_on_their_configuration_fields(release: Releases, tmp_path: Path) -> None:
    rendered = release("secrets")
    config = loaded_config(rendered, tmp_path, secret_data(rendered.named("Secret", f"{RELEASE}-dee")))
    assert (config.database, config.redis) == (SECRET_VALUES["databaseUrl"], SECRET_VALUES["redisUrl"])
    assert config.channels.email.smtp_password == SECRET_VALUES["smtpPassword"]
    assert config.channels.voice.auth_token == SECRET_VALUES["voiceAuthToken"]
    ingress = config.ingress
    assert (ingress.signing_key, ingress.previous_keys) == (SECRET_VALUES["ingressSigningKey"], ("old-link-key-1a", "old-link-key-2b"))
    assert ingress.mailgun_signing_key == SECRET_VALUES["mailgunSigningKey"]
    assert ingress.postmark_password == SECRET_VALUES["postmarkPassword"]
    assert ingress.standard_webhooks_secret == SECRET_VALUES["standardWebhooksSecret"]
    assert ingress.inbound_mail_secret == SECRET_VALUES["inboundMailSecret"]
    assert config.audit.signing_key_file == "/var/run/secrets/dee/audit/signing-key"  # where the daemons mount it


def test_the_rendered_dee_toml_is_the_configuration_given(release: Releases, tmp_path: Path) -> None:
    text = release("full").named("ConfigMap", f"{RELEASE}-dee-config")["data"]["dee.toml"]
    # whole numbers as TOML integers (Helm hands the chart every number as a float)
    assert "\npartitions = 16\n" in text and "\ndaily = [50, 100, 200]\n" in text and '\n"*" = "20/s"\n' in text
    config = loaded_config(release("full"), tmp_path, {"databaseUrl": "postgresql://db/dee", "redisUrl": "redis://cache/0"})
    assert config.config_dir == "/etc/dee/project" and config.message_domain == "mail.example.com"
    assert (config.scheduler.partitions, config.scheduler.tick_interval_ms, config.scheduler.partition_key) == (16, 500, None)
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (True, "0.0.0.0", 9464)
    assert (config.ingress.host, config.ingress.port, config.ingress.public_url) == ("0.0.0.0", 8080, "https://t.example.com")
    assert config.channels.email.smtp_port == 587 and config.channels.voice.calling_hours == ("09:00", "20:00")
    policy = config.policy
    assert policy.caps == ("voice 1/day", "email 3/7d") and policy.send_window == ("09:00", "18:00")
    assert policy.deliverability.domain_rates == {"gmail.com": "100/min", "*": "20/s"}
    assert policy.deliverability.warmup["mail.example.com"].daily == (50, 100, 200)
    assert str(policy.budgets.limits[0].cost_per_minute) == "0.014"
    assert policy.for_plan("sales-outreach-v2").calling_days == ("mon", "tue", "wed")
    defaults = loaded_config(release("defaults"), tmp_path, {"databaseUrl": "postgresql://db/dee", "redisUrl": "redis://cache/0"})
    assert defaults.config_dir == "/app"  # the image's starter project
    assert defaults.audit.signing_key_file is None  # no key in the chart's Secret: no checkpoints


def test_the_project_configmap_is_a_dee_project(release: Releases, tmp_path: Path) -> None:
    """Lay the ConfigMap out as the daemon's volume does; DEE reads its templates and plans."""
    rendered = release("full")
    data = rendered.named("ConfigMap", f"{RELEASE}-dee-project")["data"]
    (volume,) = [v for v in rendered.of_kind("StatefulSet")[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "project"]
    for item in volume["configMap"]["items"]:
        path = tmp_path / item["path"]
        path.parent.mkdir(exist_ok=True)
        path.write_text(data[item["key"]], encoding="utf-8")
    assert len(volume["configMap"]["items"]) == len(data)
    templates = load_directory(tmp_path)
    assert templates.get("email", "tmpl_cold_intro") is not None
    for name, text in FULL["project"]["plans"].items():
        assert (tmp_path / "plans" / name).read_text(encoding="utf-8") == text
        assert load_plan(tmp_path / "plans" / name, templates=templates).id == name.removesuffix(".yaml")


def partition_keys(chart: helm.Chart, tmp_path: Path, replicas: int, partitions: int) -> list[set[int]]:
    """Run each pod's rendered start script under /bin/sh, with a `dee` that prints the key."""
    rendered = render(chart, {"daemon": {"replicas": replicas, "partitionKeyFromOrdinal": True},
                              "config": {"scheduler": {"partitions": partitions}}})  # fmt: skip
    container = rendered.of_kind("StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    stub = tmp_path / "dee"
    stub.write_text('#!/bin/sh\necho "$DEE_SCHEDULER_PARTITION_KEY $*"\n', encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    keys = []
    for ordinal in range(replicas):
        env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "DEE_INSTANCE": f"{RELEASE}-dee-{ordinal}"}
        done = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True, check=True)
        key, command = done.stdout.split(" ", 1)
        assert command.strip() == "run"
        keys.append(parse_partition_key(key, partitions))
    return keys


@pytest.mark.parametrize(("replicas", "partitions"), [(3, 16), (2, 16), (16, 16), (5, 64), (1, 8)])
def test_partition_keys_from_ordinals_share_every_partition_once(chart: helm.Chart, tmp_path: Path, replicas: int,
                                                                 partitions: int) -> None:  # fmt: skip
    keys = partition_keys(chart, tmp_path, replicas, partitions)
    assert all(keys) and sum(len(k) for k in keys) == partitions
    assert set().union(*keys) == set(range(partitions))
    assert max(len(k) for k in keys) - min(len(k) for k in keys) <= 1


def test_partition_keys_from_ordinals_fail_closed(chart: helm.Chart, tmp_path: Path) -> None:
    with pytest.raises(helm.HelmRenderError, match="17 replicas cannot each own a share of 16 partitions"):
        render(chart, {"daemon": {"replicas": 17, "partitionKeyFromOrdinal": True}})
    container = render(chart, {"daemon": {"partitionKeyFromOrdinal": True}}).of_kind("StatefulSet")[0]["spec"]["template"]["spec"]
    script = container["containers"][0]
    done = subprocess.run([*script["command"], *script["args"]], env={"PATH": "/usr/bin:/bin", "DEE_INSTANCE": "dee-worker"},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "no StatefulSet ordinal in the pod name dee-worker" in done.stderr


def test_the_alerts_use_metrics_dee_exports(release: Releases) -> None:
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}[family.type]
        exported |= {family.name + s for s in suffixes}
    rules = release("full").of_kind("PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\bdee_[a-z_]+\b", rule["expr"])}
    assert used and used <= exported, used - exported


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_finds_nothing(values: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[values], strict=True, kube_version="v1.37.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
