"""The Helm chart's manifests: valid for two Kubernetes versions (kubernetes-validate, strict:
an unknown field is an error), labelled by the chart conventions, restricted Pod Security
Standard everywhere, probes and resources, no secret outside the Secret, migrations as a hook
(or init containers), a `helm test` pod."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.chart import (
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    SECRET_VALUES,
    VALUE_SETS,
    Release,
    containers,
    pod_specs,
    render,
    secret_data,
)
from tests.deploy.crd_schemas import SCHEMAS

Releases = Callable[[str], Release]
SETS = sorted(VALUE_SETS)
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart")  # fmt: skip
SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "DEE_CHANNELS_EMAIL_SMTP_PASSWORD", "DEE_CHANNELS_VOICE_AUTH_TOKEN",
              "DEE_INGRESS_SIGNING_KEY", "DEE_INGRESS_PREVIOUS_KEYS", "DEE_INGRESS_MAILGUN_SIGNING_KEY",
              "DEE_INGRESS_POSTMARK_PASSWORD", "DEE_INGRESS_STANDARD_WEBHOOKS_SECRET", "DEE_INGRESS_INBOUND_MAIL_SECRET"}  # fmt: skip
# a password in a URL, a PEM block, a Standard Webhooks secret
SECRET_LOOKING = re.compile(r"://[^/\s:@]+:[^/\s@]+@|-----BEGIN|whsec_")
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def validate(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] in SCHEMAS:
        jsonschema.Draft7Validator(SCHEMAS[obj["kind"]]).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", SETS)
def test_every_manifest_validates_strictly(release: Releases, values: str, version: str) -> None:
    objects = release(values).objects
    assert len(objects) >= 9
    for obj in objects:
        validate(obj, version)


def test_strict_validation_refuses_an_unknown_field(release: Releases) -> None:
    """The validation above can fail: a misspelt field of a core object, and of a custom resource."""
    statefulset = copy.deepcopy(release("defaults").of_kind("StatefulSet")[0])
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(statefulset, KUBERNETES_VERSIONS[-1])
    monitor = copy.deepcopy(release("full").of_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("values", SETS)
def test_every_object_and_pod_carries_the_standard_labels(release: Releases, values: str) -> None:
    for obj in release(values).objects:
        labels = obj["metadata"]["labels"]
        assert all(labels.get(k) for k in STANDARD_LABELS), (obj["kind"], obj["metadata"]["name"], labels)
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/managed-by"] == "Helm"
        assert obj["metadata"]["namespace"] == NAMESPACE
        template = obj.get("spec", {}).get("template")
        if template is not None:
            assert all(template["metadata"]["labels"].get(k) for k in STANDARD_LABELS), obj["metadata"]["name"]


def selectors(release: Release) -> dict[str, dict[str, str]]:
    found = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["selector"]["matchLabels"]
             for o in release.objects if o["kind"] in ("StatefulSet", "Deployment", "PodDisruptionBudget", "ServiceMonitor")}  # fmt: skip
    found.update({f"Service/{o['metadata']['name']}": o["spec"]["selector"] for o in release.of_kind("Service")})
    return found


def test_selectors_are_stable_across_versions_and_select_what_they_should(chart: helm.Chart, release: Releases) -> None:
    """A selector is immutable on a StatefulSet or Deployment: it must not hold the version or
    the chart (an upgrade would be refused), and every Service, PDB and ServiceMonitor must
    select pods (or Services) the chart runs."""
    full = release("full")
    upgraded = render(chart, {**VALUE_SETS["full"], "image": {"repository": "registry.example.com/dee", "tag": "0.9.1"}}, revision=2)
    assert upgraded.of_kind("StatefulSet")[0]["metadata"]["labels"]["app.kubernetes.io/version"] == "0.9.1"
    assert selectors(upgraded) == selectors(full)
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in full.objects if o["kind"] in ("StatefulSet", "Deployment")]
    services = [o["metadata"]["labels"] for o in full.of_kind("Service")]
    for name, selector in selectors(full).items():
        assert not {"app.kubernetes.io/version", "helm.sh/chart"} & set(selector), name
        targets = services if name.startswith("ServiceMonitor/") else pods
        matched = [labels for labels in targets if selector.items() <= labels.items()]
        assert len(matched) == (2 if name.startswith("ServiceMonitor/") else 1), name


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What a pod spec breaks of the restricted Pod Security Standard (baseline included), plus
    the chart's own rules: a numeric non-root user and a read-only root filesystem."""
    problems = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    problems += [f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    pod = spec.get("securityContext", {})
    for c in containers(spec):
        ctx, name = c.get("securityContext", {}), c["name"]
        merged = {**pod, **ctx}
        if merged.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot")
        if not isinstance(merged.get("runAsUser"), int) or merged["runAsUser"] == 0:
            problems.append(f"{name}: a numeric non-root runAsUser")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities")
        if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("values", SETS)
def test_every_pod_meets_the_restricted_pod_security_standard(release: Releases, values: str) -> None:
    specs = dict(pod_specs(release(values)))
    assert {f"{RELEASE}-dee", f"{RELEASE}-dee-ingress", f"{RELEASE}-dee-test-health"} <= set(specs)
    for name, spec in specs.items():
        assert restricted_violations(spec) == [], name
        assert spec["automountServiceAccountToken"] is False, name
        # the root filesystem is read-only: Python's temporary files go to an emptyDir
        for c in containers(spec):
            assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"], (name, c["name"])


def test_the_restricted_check_finds_what_breaks_it(release: Releases) -> None:
    spec = copy.deepcopy(dict(pod_specs(release("defaults")))[f"{RELEASE}-dee"])
    ctx = spec["containers"][0]["securityContext"]
    ctx.update(allowPrivilegeEscalation=True, readOnlyRootFilesystem=False, runAsUser=0, capabilities={"add": ["NET_ADMIN"]})
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert sorted(restricted_violations(spec)) == sorted([
        "volume host", "daemon: a numeric non-root runAsUser", "daemon: allowPrivilegeEscalation",
        "daemon: capabilities", "daemon: readOnlyRootFilesystem"])  # fmt: skip


@pytest.mark.parametrize("values", SETS)
def test_probes_on_every_server_and_resources_on_every_container(release: Releases, values: str) -> None:
    for obj in release(values).objects:
        if obj["kind"] not in ("StatefulSet", "Deployment"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), (obj["metadata"]["name"], c["name"])
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for name, spec in pod_specs(release(values)):
        for c in containers(spec):
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], (name, c["name"])


@pytest.mark.parametrize("values", SETS)
def test_no_secret_in_a_configmap_or_an_env_value(release: Releases, values: str) -> None:
    rendered = release(values)
    for config_map in rendered.of_kind("ConfigMap"):
        for key, text in config_map["data"].items():
            assert not SECRET_LOOKING.search(text), (config_map["metadata"]["name"], key)
    for name, spec in pod_specs(rendered):
        for c in containers(spec):
            for env in c.get("env", []):
                if "value" in env:
                    assert env["name"] not in SECRET_ENV and not SECRET_LOOKING.search(env["value"]), (name, env)
                if env["name"] in SECRET_ENV:
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, (name, env)


def test_the_secrets_are_in_the_secret_and_nowhere_else(release: Releases) -> None:
    rendered = release("secrets")
    secret = rendered.named("Secret", f"{RELEASE}-dee")
    assert secret_data(secret) == SECRET_VALUES
    elsewhere = json.dumps([o for o in rendered.objects if o["kind"] != "Secret"])
    for key, value in SECRET_VALUES.items():
        for piece in value.split(","):
            assert piece not in elsewhere, key
    # the migration hook's own Secret holds only what `dee migrate` needs
    assert secret_data(rendered.named("Secret", f"{RELEASE}-dee-migrate")) == {"databaseUrl": SECRET_VALUES["databaseUrl"]}


def test_an_existing_secret_replaces_the_charts(release: Releases) -> None:
    rendered = release("full")
    assert rendered.of_kind("Secret") == []
    refs = {env["valueFrom"]["secretKeyRef"]["name"] for _, spec in pod_specs(rendered) for c in containers(spec)
            for env in c.get("env", []) if "secretKeyRef" in env.get("valueFrom", {})}  # fmt: skip
    assert refs == {"dee-credentials"}
    daemon = rendered.of_kind("StatefulSet")[0]["spec"]["template"]["spec"]
    (key,) = [v for v in daemon["volumes"] if v["name"] == "audit-signing-key"]
    assert key["secret"]["secretName"] == "dee-credentials" and key["secret"]["optional"] is True
    assert key["secret"]["items"] == [{"key": "auditSigningKey", "path": "signing-key"}]


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(release: Releases) -> None:
    rendered = release("defaults")
    job = rendered.named("Job", f"{RELEASE}-dee-migrate")
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and spec["containers"][0]["args"] == ["migrate"]
    assert spec["serviceAccountName"] == "default"  # the release's own does not exist yet at pre-install
    # the hook's ConfigMap and Secret come first (a lower weight) and are deleted afterwards
    for kind in ("ConfigMap", "Secret"):
        annotations = rendered.named(kind, f"{RELEASE}-dee-migrate")["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == hook["helm.sh/hook"]
        assert int(annotations["helm.sh/hook-weight"]) < int(hook["helm.sh/hook-weight"])
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} == {f"{RELEASE}-dee-migrate"}
    for _, pod in pod_specs(rendered):
        assert "initContainers" not in pod


def test_migrations_as_init_containers_instead(release: Releases) -> None:
    rendered = release("full")
    assert rendered.of_kind("Job") == []
    for kind in ("StatefulSet", "Deployment"):
        (init,) = rendered.of_kind(kind)[0]["spec"]["template"]["spec"]["initContainers"]
        assert init["args"] == ["migrate"] and [e["name"] for e in init["env"]] == ["DEE_CONFIG", "DATABASE_URL"]


@pytest.mark.parametrize("values", SETS)
def test_helm_test_runs_dee_health(release: Releases, values: str) -> None:
    pod = release(values).named("Pod", f"{RELEASE}-dee-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["args"] == ["health"]


def test_the_optional_objects(release: Releases) -> None:
    kinds = {o["kind"] for o in release("defaults").objects}
    assert not {"Ingress", "ServiceMonitor", "PrometheusRule"} & kinds
    assert {"PodDisruptionBudget", "ServiceAccount", "Service", "StatefulSet", "Deployment"} <= kinds
    full = release("full")
    ingress = full.of_kind("Ingress")[0]["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["ingressClassName"] == "nginx" and backend == {"name": f"{RELEASE}-dee-ingress", "port": {"name": "http"}}
    assert full.of_kind("ServiceMonitor")[0]["metadata"]["labels"]["release"] == "prometheus"
    alerts = [r["alert"] for r in full.of_kind("PrometheusRule")[0]["spec"]["groups"][0]["rules"]]
    assert alerts == ["DeeTickLag", "DeeDeadLetters", "DeeLeaseLosses"]
    assert "https://t.example.com" in full.notes and f"helm test {RELEASE}" in full.notes
