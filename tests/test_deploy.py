"""The deployment files: alert rules (promtool), the dashboard, compose and Dockerfile, and
docs/metrics.md against the metrics registry.

The queries themselves are run against a live daemon in tests/test_observability.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from prom_helpers import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_CONFIG,
    REPO,
    prometheus_binaries,
)

from dispatchd import metrics
from dispatchd.settings import Settings


@pytest.fixture(scope="module")
def prometheus_bins() -> tuple[str, str]:
    """``prometheus`` and ``promtool`` (installed with apt-get when missing)."""
    return prometheus_binaries()


def promtool(bins: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bins[1], *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_promtool_check_rules(prometheus_bins):
    done = promtool(prometheus_bins, "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_promtool_test_rules(prometheus_bins):
    done = promtool(prometheus_bins, "test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_config(prometheus_bins):
    done = promtool(prometheus_bins, "check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_every_alert_has_unit_tests_and_a_runbook():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t["alert_rule_test"]
              if case.get("exp_alerts")}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"]
             if not case.get("exp_alerts")}
    for rule in alert_rules():
        name = rule["alert"]
        assert name in firing and name in quiet, f"{name}: needs a firing and a quiet case"
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert rule["labels"]["severity"] in ("page", "warning"), name


def test_every_alert_links_its_runbook_section():
    """runbook_url (the convention, not free text) points at the alert's own section of
    docs/metrics.md, which has the steps."""
    doc = (REPO / "docs" / "metrics.md").read_text()
    runbooks = doc[doc.index("\n## Runbooks\n"):]
    sections = re.findall(r"^### (\w+)\n\n(.+?)(?=^### |\Z)", runbooks, re.M | re.S)
    steps = {name: body for name, body in sections}
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"docs/metrics.md#{name.lower()}", name
        assert name in steps and steps[name].lstrip().startswith("1. "), name
    assert set(steps) == {r["alert"] for r in alert_rules()}


def test_dead_letter_alert_needs_a_sustained_rate():
    """Not one refused command: a threshold over the window and a `for:`."""
    rule = next(r for r in alert_rules() if r["alert"] == "DispatchdDeadLetters")
    assert rule.get("for") == "10m"
    assert re.search(r"\)\s*>=\s*10\s*$", rule["expr"].strip()), rule["expr"]


def dashboard_panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_is_provisioning_ready():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "dispatchd" and "id" not in doc
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["datasource", "tenant", "group"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
        assert panel.get("description"), panel["title"]
    titles = " ".join(p["title"] for p in dashboard_panels()).lower()
    for topic in ("service level", "asa", "abandonment", "queue depth", "oldest wait",
                  "occupancy", "per second", "latency", "overflow", "refused",
                  "dead-letter", "lag", "tickets created", "ticket assignments",
                  "tickets forwarded", "open tickets", "waiting tickets", "overdue tickets",
                  "ticket resolution", "forwarding loops"):
        assert topic in titles, topic


def test_grafana_provisioning_points_at_the_dashboard():
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dispatchd.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    assert any(v.endswith(":" + path) or v.endswith(":" + path + ":ro")
               for v in grafana["volumes"]), grafana["volumes"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_and_dockerfile_agree_with_the_settings():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"valkey", "dispatchd", "prometheus", "grafana"} <= set(services)
    env = services["dispatchd"]["environment"]
    assert env["DISPATCHD_REDIS_URL"].startswith("redis://valkey:")
    assert env["DISPATCHD_METRICS_HOST"] == "0.0.0.0"
    docker = (REPO / "Dockerfile").read_text()
    defaults = Settings()
    for needle in ("FROM python:3.11-slim", "USER ", "HEALTHCHECK", "/healthz",
                   f"EXPOSE {defaults.admin_port} {defaults.metrics_port}",
                   "DISPATCHD_METRICS_HOST=0.0.0.0", "DISPATCHD_ADMIN_HOST=0.0.0.0"):
        assert needle in docker, needle
    targets = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
    assert targets["static_configs"][0]["targets"] == [f"dispatchd:{defaults.metrics_port}"]


def registry_names() -> set[str]:
    return {m.name for m in metrics.REGISTRY.collect()}


def test_docs_list_every_metric():
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(dispatchd_\w+)` \|", doc, re.M))
    exposed, process = set(), set()
    for family in metrics.REGISTRY.collect():
        suffix = "_total" if family.type == "counter" else ""
        (process if family.name.startswith("process_") else exposed).add(family.name + suffix)
    assert documented == exposed
    assert process, "the process collector is registered"
    for name in process:
        assert f"`{name}`" in doc, name


def test_gauges_are_not_named_like_counters():
    """The gauges of a state now are named apart from the counters of the same events
    (dispatchd_overdue_tickets vs dispatchd_tickets_overdue_total, and
    dispatchd_dead_letter_entries vs dispatchd_dead_letters_total, were easy to mix up);
    the round-trip histogram is named for what it measures."""
    names = {f.name: f.type for f in metrics.REGISTRY.collect()}
    assert names["dispatchd_tickets_overdue_now"] == "gauge"
    assert names["dispatchd_dead_letter_stream_length"] == "gauge"
    assert names["dispatchd_consumer_round_trip_seconds"] == "histogram"
    for old in ("dispatchd_overdue_tickets", "dispatchd_dead_letter_entries",
                "dispatchd_lua_call_duration_seconds"):
        assert old not in names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_queries_use_known_metrics(rule):
    known = {n + s for n in registry_names() for s in ("", "_total", "_bucket", "_sum",
                                                       "_count")}
    used = set(re.findall(r"\b(dispatchd_\w+)", rule["expr"]))
    assert used <= known, used - known


def test_dashboard_queries_use_known_metrics():
    known = {n + s for n in registry_names() for s in ("", "_total", "_bucket", "_sum",
                                                       "_count")}
    for panel in dashboard_panels():
        for target in panel["targets"]:
            used = set(re.findall(r"\b(dispatchd_\w+)", target["expr"]))
            assert used <= known, (panel["title"], used - known)


def test_compose_cluster_profile():
    """`docker compose --profile cluster up`: 6 cluster-enabled Valkey nodes, a job that
    forms the cluster (3 masters, a replica each), a daemon on its redis+cluster:// URL."""
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    profiled = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    nodes = {f"valkey-c{i}" for i in range(1, 7)}
    assert profiled == nodes | {"cluster-create", "dispatchd-cluster"}
    for n in nodes:
        assert "--cluster-enabled" in services[n]["command"]
    create = " ".join(services["cluster-create"]["command"])
    assert "--cluster create" in create and "--cluster-replicas 1" in create
    assert set(services["cluster-create"]["depends_on"]) == nodes
    url = services["dispatchd-cluster"]["environment"]["DISPATCHD_REDIS_URL"]
    Settings.from_env({"DISPATCHD_REDIS_URL": url})
    assert url == "redis+cluster://valkey-c1:6379,valkey-c2:6379,valkey-c3:6379"
    assert services["dispatchd-cluster"]["depends_on"]["cluster-create"]["condition"] == (
        "service_completed_successfully")
