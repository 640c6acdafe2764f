"""The `config` part of the Helm chart's values.schema.json, derived from `EngineConfig`.

`config` is dee.toml without its secrets, so its schema is the configuration's own (msgspec's
JSON Schema of `EngineConfig`), made self-contained and draft-07, with every secret and every
key the chart sets itself refused and pointing at where it belongs. The chart's test checks the
file against this; after a change to `dee/config.py`, rewrite it:

    .venv/bin/python -m tests.deploy.config_schema
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from dee.config import EngineConfig

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "helm" / "dee" / "values.schema.json"

# dotted path in dee.toml -> where the value goes instead
SECRETS = {
    "database": "secrets.databaseUrl",
    "redis": "secrets.redisUrl",
    "channels.email.smtp_password": "secrets.smtpPassword",
    "channels.voice.auth_token": "secrets.voiceAuthToken",
    "ingress.signing_key": "secrets.ingressSigningKey",
    "ingress.previous_keys": "secrets.ingressPreviousKeys",
    "ingress.mailgun_signing_key": "secrets.mailgunSigningKey",
    "ingress.postmark_password": "secrets.postmarkPassword",
    "ingress.standard_webhooks_secret": "secrets.standardWebhooksSecret",
    "ingress.inbound_mail_secret": "secrets.inboundMailSecret",
}
CHART_MANAGED = {
    "config_dir": "the chart: project (a ConfigMap) or the image's /app",
    "metrics": "the chart: metrics.port (always enabled, on every address)",
    "ingress.host": "the chart: every address",
    "ingress.port": "the chart: ingress.port",
    "scheduler.partition_key": "the chart: daemon.partitionKeyFromOrdinal",
}
# secrets only `dee audit archive` reads, which the chart does not run: kept out of its ConfigMap
NOT_IN_CHART = {
    "audit.s3_access_key_id": "a secret of `dee audit archive` (not run by the chart): give its job AWS_ACCESS_KEY_ID or a role",
    "audit.s3_secret_access_key": "a secret of `dee audit archive` (not run by the chart): give its job AWS_SECRET_ACCESS_KEY or a role",
}


def config_schema() -> dict[str, Any]:
    """The schema of `config`: inline (no $ref), draft-07, secrets and chart keys refused."""
    generated = msgspec.json.schema(EngineConfig)
    definitions = generated["$defs"]
    schema = _inline(generated, definitions)
    for path, target in SECRETS.items():
        _refuse(schema, path, f"a secret: set {target} (or the key {target.split('.')[1]} of secrets.existingSecret)")
    for path, owner in CHART_MANAGED.items():
        _refuse(schema, path, f"set by {owner}")
    for path, why in NOT_IN_CHART.items():
        _refuse(schema, path, why)
    return schema


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Replace every $ref by its definition, tuples' prefixItems by draft-07 `items` lists, and
    drop what only msgspec's output needs (titles, defaults: values.yaml holds the chart's)."""
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, definitions)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$defs", "title", "default") or (key == "required" and not value):
            continue
        if key == "prefixItems":
            out["items"] = _inline(value, definitions)
            out["additionalItems"] = False
        elif key == "items" and "prefixItems" in node:
            continue
        elif key == "properties":
            out[key] = {name: _inline(field, definitions) for name, field in value.items()}
        else:
            out[key] = _inline(value, definitions)
    return out


def _refuse(schema: dict[str, Any], path: str, description: str) -> None:
    *parents, name = path.split(".")
    node = schema
    for parent in parents:
        node = node["properties"][parent]
    assert name in node["properties"], f"{path} is no longer a configuration key"
    node["properties"][name] = {"not": {}, "description": description}


def main() -> None:
    """Write `config_schema()` into values.schema.json (keeping the rest of the file)."""
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    document["properties"]["config"] = config_schema()
    SCHEMA_FILE.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
