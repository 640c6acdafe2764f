"""The Grafana dashboard and the Prometheus alert rules in `contrib/` hold together: each is
well formed, and every metric their queries name is one the daemon declares (a renamed metric
would otherwise leave a panel empty and an alert silent, and nobody would notice)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from dee.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "dee-dashboard.json"
ALERTS = ROOT / "contrib" / "prometheus" / "dee-alerts.yml"
# a metric name in PromQL: ours, and the process and Python collectors' ones
METRIC = re.compile(r"\b(?:dee|process|python)_[a-z_]+\b")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def exported_names() -> set[str]:
    """Every sample name the daemon's registry can expose, without `_bucket`, `_sum`, `_count`."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def used(expressions: list[str]) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", name) for expr in expressions for name in METRIC.findall(expr)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panel_expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", ())]


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(loaded) == {"groups"} and isinstance(loaded["groups"], list) and loaded["groups"]
    rules: list[dict[str, Any]] = []
    for group in loaded["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and isinstance(group["name"], str) and group["rules"]
        rules += group["rules"]
    return rules


def test_the_exported_names_are_conventional() -> None:
    names = exported_names()
    ours = {n for n in names if n.startswith("dee_")}
    assert {"dee_runs", "dee_tick_lag_seconds", "dee_steps_total", "dee_build_info", "dee_inbound_backlog_messages"} <= ours
    assert "dee_tick_lag_ticks" not in ours  # renamed: seconds, a base unit
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names


def test_the_dashboard_is_a_grafana_model_on_a_chosen_prometheus() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert [i["pluginId"] for i in board["__inputs"]] == ["prometheus"]  # importing asks for it: ${DS_PROMETHEUS}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("transitions per second", "tick lag", "tick duration p99", "inbound backlog", "dispatch latency p95",
                  "dispatch failure rate", "policy denials", "dead letters", "partitions per instance", "runs by status"):  # fmt: skip
        assert topic in titles, topic


def test_the_alert_rules_are_a_prometheus_rule_file() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "DeeTickLagHigh", "DeeDeadLetters", "DeeLeaseLost", "DeeDispatchFailureRate", "DeeInboundBacklogGrowing",
    }  # fmt: skip
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported() -> None:
    exported = exported_names()
    on_board = used(panel_expressions(dashboard()))
    in_alerts = used([r["expr"] for r in alert_rules()])
    assert on_board and in_alerts
    assert on_board - exported == set(), "dashboard"
    assert in_alerts - exported == set(), "alerts"


def test_a_misspelt_metric_would_be_caught() -> None:
    """The check above compares names, not fragments: a query with a name off by a suffix fails."""
    assert used(["rate(dee_steps[5m])", "histogram_quantile(0.9, rate(dee_tick_duration_seconds_bucket[5m]))"]) == {
        "dee_steps", "dee_tick_duration_seconds"}  # fmt: skip
    assert "dee_steps" not in exported_names()  # a counter is exposed as dee_steps_total
