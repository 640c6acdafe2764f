"""JSON Schemas of the two custom resources the chart may render, for which kubernetes-validate
has none: the prometheus-operator's ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1).

Written here from the CRDs' published OpenAPI schemas, restricted to the fields the chart can
write, with the CRDs' types, patterns and required fields; unlike the CRDs (which prune unknown
fields silently) every level refuses unknown fields, so a misspelt key fails the test instead of
vanishing on the cluster.
"""

from __future__ import annotations

from typing import Any

DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {"matchLabels": STRING_MAP}}


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "namespace"],
                "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                               "labels": STRING_MAP, "annotations": STRING_MAP},
            },
            "spec": spec,
        },
    }


SERVICE_MONITOR = _resource("ServiceMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": LABEL_SELECTOR,
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"port": {"type": "string"}, "path": {"type": "string"}, "interval": DURATION,
                           "scrapeTimeout": DURATION, "scheme": {"enum": ["http", "https"]}},
        }},
    },
})

RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {"alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": ["string", "integer"]},
                   "for": DURATION, "keep_firing_for": DURATION, "labels": STRING_MAP, "annotations": STRING_MAP},
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}

PROMETHEUS_RULE = _resource("PrometheusRule", {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {"groups": {"type": "array", "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "interval": DURATION,
                       "rules": {"type": "array", "items": RULE}},
    }}},
})

SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
