"""docker-compose.yml checked offline: valid against the Compose Specification's JSON Schema, and
wired so that `docker compose up` gives a stack whose daemons mail Mailpit: the services and
their order, one database and Redis for every DEE process, the smtp adapter pointed at Mailpit,
the ingress's public URL, Prometheus scraping every daemon, Grafana's provisioning, pinned
images and restart policies. The stack itself runs in `test_compose_stack.py`."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from dee.config import EngineConfig
from dee.ops.cli import build_parser
from dee.ops.cli.runs import cmd_start
from dee.plugin.manager import PluginManager
from tests.deploy import compose
from tests.deploy.compose import ROOT, container_env, environment, host_path, mounts

SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text(encoding="utf-8"))
STACK = compose.load()
SERVICES: dict[str, Any] = STACK["services"]
DEE_SERVICES = ["migrate", "dee", "ingress", "demo"]  # the services that run the DEE image
ONE_SHOT = {"migrate", "demo"}


def loaded(name: str, tmp_path: Path) -> EngineConfig:
    return EngineConfig.load(env=container_env(SERVICES[name], tmp_path / "app"))


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of a service's `ports`."""
    found = {}
    for spec in service.get("ports") or []:
        address, host, container = str(spec).split(":")
        found[int(container)] = (address, int(host))
    return found


def test_the_file_is_valid_against_the_compose_specification() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(STACK), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(("where", "change"), [
    ("a misspelt key", lambda s: s["services"]["dee"].update(restrat="always")),
    ("a volume option misspelt", lambda s: s["volumes"]["pgdata"].update(drivr="local")),
    ("an unknown condition", lambda s: s["services"]["dee"]["depends_on"]["migrate"].update(condition="service_done")),
])  # fmt: skip
def test_the_schema_refuses_a_broken_file(where: str, change: Any) -> None:
    broken = copy.deepcopy(STACK)
    change(broken)
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken)), where


def test_dependencies_name_services_and_wait_for_what_they_need() -> None:
    for name, service in SERVICES.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on {dependency}, which is no service"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency} to be healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT, f"{name} waits for {dependency} to end, which it never does"
    order = {name: set(s.get("depends_on") or {}) for name, s in SERVICES.items()}
    assert order["migrate"] == {"postgres"} and {"migrate", "redis", "mailpit"} <= order["dee"]
    assert {"migrate", "redis"} <= order["ingress"] and order["demo"] == {"dee"}
    assert SERVICES["dee"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_restart_policies_keep_the_services_up_and_run_the_one_shot_jobs_once() -> None:
    for name, service in SERVICES.items():
        assert service.get("restart") == ("no" if name in ONE_SHOT else "unless-stopped"), name
    assert SERVICES["demo"]["profiles"] == ["demo"]  # `docker compose up` does not enrol anyone by itself


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if name in DEE_SERVICES:
            assert service["build"] == "." and image == "dee:local", name  # built here, from the Dockerfile
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: {image} is not pinned to a release (past its major version)"


def test_every_dee_process_gets_the_same_settings(tmp_path: Path) -> None:
    envs = {name: environment(SERVICES[name]) for name in DEE_SERVICES}
    assert all(env == envs["dee"] for env in envs.values()), envs
    configs = [loaded(name, tmp_path / name) for name in DEE_SERVICES]
    assert len({(c.database, c.redis, c.namespace, c.scheduler.partitions) for c in configs}) == 1


def test_the_daemons_use_the_stacks_postgres_and_redis_with_aof(tmp_path: Path) -> None:
    config = loaded("dee", tmp_path)
    database = urlsplit(config.database)
    pg = environment(SERVICES["postgres"])
    assert (database.hostname, database.port, database.username, database.password, database.path) == (
        "postgres", 5432, pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "/" + pg["POSTGRES_DB"])  # fmt: skip
    assert urlsplit(config.redis).hostname == "redis" and urlsplit(config.redis).port == 6379
    command = SERVICES["redis"]["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    assert {m.target: m.source for m in mounts(SERVICES["redis"])}["/data"] in STACK["volumes"]
    assert {m.target: m.source for m in mounts(SERVICES["postgres"])}["/var/lib/postgresql/data"] in STACK["volumes"]
    for service in SERVICES.values():
        for mount in mounts(service):
            assert mount.bind or mount.source in STACK["volumes"], f"volume {mount.source} is not declared"


def test_the_daemons_mail_mailpit_over_smtp_without_tls(tmp_path: Path) -> None:
    config = loaded("dee", tmp_path)
    email = config.channels.email
    assert (email.adapter, email.smtp_host, email.smtp_port, email.smtp_tls) == ("smtp", "mailpit", 1025, "none")
    assert email.smtp_host in SERVICES and SERVICES["mailpit"]["image"].startswith("axllent/mailpit:")
    assert not any(k.startswith("MP_SMTP_BIND") for k in environment(SERVICES["mailpit"]))  # Mailpit's SMTP stays on 1025
    assert type(PluginManager.load(disabled=config.plugins.disabled).selected_adapters(config)["email"]).__name__ == "SmtpAdapter"
    assert (config.channels.voice.adapter, config.scheduler.clock) == ("simulated", "wall")
    assert published(SERVICES["mailpit"]) == {8025: ("127.0.0.1", 8025)}


def test_links_in_the_mail_point_at_the_ingress_the_stack_publishes(tmp_path: Path) -> None:
    service = SERVICES["ingress"]
    assert service["command"] == ["ingress"]
    config = loaded("ingress", tmp_path)
    address, port = published(service)[config.ingress.port]
    assert (address, config.ingress.host) == ("127.0.0.1", "0.0.0.0")
    assert config.ingress.public_url == f"http://localhost:{port}"
    assert config.channels.email.unsubscribe_base == f"{config.ingress.public_url}/u"
    assert config.channels.email.tracking_domain == urlsplit(config.ingress.public_url).netloc


def test_healthchecks_ask_each_dee_process_whether_it_is_ready(tmp_path: Path) -> None:
    for name in ("dee", "ingress"):
        config = loaded(name, tmp_path / name)
        test = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{config.metrics.port}/readyz" in test, name
        assert config.metrics.enabled and config.metrics.host == "0.0.0.0"


def test_prometheus_scrapes_every_daemon_replica_and_the_ingress(tmp_path: Path) -> None:
    service = SERVICES["prometheus"]
    (config_flag,) = [a for a in service["command"] if a.startswith("--config.file=")]
    scrape = yaml.safe_load(host_path(service, config_flag.partition("=")[2]).read_text(encoding="utf-8"))
    metrics_port = loaded("dee", tmp_path).metrics.port
    targets = {}
    for job in scrape["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            targets.update(dict.fromkeys(sd["names"], sd["port"]))
    assert targets == {"dee": metrics_port, "ingress": metrics_port}
    assert SERVICES["dee"]["deploy"]["replicas"] == 2  # one A record each: both are scraped
    assert published(service) == {9090: ("127.0.0.1", 9090)}


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard_directory() -> None:
    service = SERVICES["grafana"]
    provisioning = host_path(service, "/etc/grafana/provisioning")
    assert provisioning == (ROOT / "contrib" / "grafana" / "provisioning").resolve()
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))["datasources"]
    url = urlsplit(source["url"])
    assert (source["type"], url.hostname, url.port, source["isDefault"]) == ("prometheus", "prometheus", 9090, True)
    assert 9090 in published(SERVICES[url.hostname])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dee.yml").read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert host_path(service, provider["options"]["path"]) == (ROOT / "contrib" / "grafana").resolve()
    assert all(m.read_only for m in mounts(service) if m.bind)
    assert published(service) == {3000: ("127.0.0.1", 3000)}


def test_the_demo_enrols_sample_contacts_with_the_consent_calls_need(tmp_path: Path) -> None:
    config = loaded("demo", tmp_path)
    args = build_parser().parse_args(SERVICES["demo"]["command"])
    assert args.func is cmd_start and args.sample > 0
    assert set(config.policy.consent_required) <= set(args.consent)
    assert (tmp_path / "app" / args.plan).is_file()  # the starter's plan, in the image's /app
