"""Rendering the Helm chart offline (Helm's own engine, bundled by helm-python-sdk: no helm
binary, no cluster) and walking what it renders.

`VALUE_SETS` are the releases the tests render: the defaults, every option at once (existing
Secret, init-container migrations, partition keys from ordinals, a project ConfigMap, the
Kubernetes Ingress, ServiceMonitor and PrometheusRule), and every secret given to the chart.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "dee"
RELEASE = "acme"
NAMESPACE = "outreach"
KUBERNETES_VERSIONS = ("1.36", "1.37")  # the two newest kubernetes-validate ships schemas for

# every value of the `secrets` set: none may appear outside the Secret
SECRET_VALUES = {
    "databaseUrl": "postgresql://dee:pg-pass-1f2e@db.internal:5432/dee",
    "redisUrl": "rediss://dee:redis-pass-3c4d@cache.internal:6380/0",
    "smtpPassword": "smtp-pass-5e6f",
    "voiceAuthToken": "twilio-token-7a8b",
    "ingressSigningKey": "link-key-9c0d",
    "ingressPreviousKeys": "old-link-key-1a,old-link-key-2b",
    "mailgunSigningKey": "mailgun-key-3e4f",
    "postmarkPassword": "postmark-pass-5a6b",
    "standardWebhooksSecret": "whsec_c2VjcmV0LTdjOGQ=",
    "inboundMailSecret": "inbound-pass-9e0f",
    "auditSigningKey": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKm2\n-----END PRIVATE KEY-----\n",
}


def _project(folder: str) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "config" / folder).glob("*.yaml"))}


FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/dee", "tag": "0.1.0"},
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "secrets": {"existingSecret": "dee-credentials", "databaseUrl": "", "redisUrl": ""},
    "config": {
        "scheduler": {"partitions": 16, "tick_interval_ms": 500},
        "channels": {
            "email": {"adapter": "smtp", "smtp_host": "smtp.example.com", "smtp_port": 587, "smtp_tls": "starttls",
                      "smtp_username": "dee", "tracking_domain": "t.example.com",
                      "unsubscribe_base": "https://t.example.com/u", "sender": {"email": "hello@example.com", "name": "Acme"}},
            "voice": {"adapter": "twilio", "api_url": "https://api.twilio.com", "account_sid": "AC123",
                      "status_callback_url": "https://t.example.com/voice/twilio/status", "calling_hours": ["09:00", "20:00"]},
        },
        "ingress": {"public_url": "https://t.example.com", "postmark_username": "dee", "token_ttl_days": 180},
        "policy": {
            "caps": ["voice 1/day", "email 3/7d"], "holidays": "US-CA", "send_window": ["09:00", "18:00"],
            "plans": {"sales-outreach-v2": {"calling_days": ["mon", "tue", "wed"]}},
            "deliverability": {"daily_limit": 2000, "domain_rates": {"gmail.com": "100/min", "*": "20/s"},
                               "warmup": {"mail.example.com": {"start": "2026-02-01", "daily": [50, 100, 200]}}},
            "budgets": {"on_exhausted": "pause", "limits": [
                {"channel": "voice", "cost_per_send": "0.01", "cost_per_minute": "0.014", "limit": "500", "period": "month"}]},
        },
        "log": {"format": "json", "level": "info"},
        "message_domain": "mail.example.com",
    },
    "project": {"plans": _project("plans"), "templates": _project("templates"), "scripts": _project("scripts")},
    "daemon": {"replicas": 3, "partitionKeyFromOrdinal": True, "tolerations": [{"key": "dedicated", "operator": "Equal",
               "value": "dee", "effect": "NoSchedule"}], "topologySpreadConstraints": [{"maxSkew": 1,
               "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "daemon"}}}]},
    "ingress": {"replicas": 3, "nodeSelector": {"kubernetes.io/os": "linux"}, "kubernetesIngress": {
        "enabled": True, "className": "nginx", "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "t.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "t-example-com-tls", "hosts": ["t.example.com"]}]}},
    "migrations": {"mode": "initContainer"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "full": FULL,
    "secrets": {"secrets": SECRET_VALUES},
}


@dataclass(frozen=True)
class Release:
    """One rendering: the manifests (hooks and test pods included) and NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found


def render(chart: helm.Chart, values: dict[str, Any], *, revision: int = 1) -> Release:
    """Render as `helm install` would (the SDK applies values.schema.json first), or as the
    `helm upgrade` to `revision`."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, revision=revision,
                             is_install=revision == 1, is_upgrade=revision > 1)  # fmt: skip
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Release(objects, notes)


def pod_specs(release: Release) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload: StatefulSet, Deployment, Job and bare Pod."""
    for obj in release.objects:
        if obj["kind"] in ("StatefulSet", "Deployment", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
