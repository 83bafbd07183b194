"""The Grafana dashboard and its provisioning: panels query metrics the worker exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, app_metric_names

MONITORING = REPO / "k8s" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "tradestats.json"
#: Metrics the dashboard charts that the worker does not export yet (proposed in the deploy
#: issue's report). Remove a name once the app exports it.
PROPOSED_METRICS: set[str] = set()
#: What the issue asks the dashboard to show, by panel title.
REQUIRED_PANELS = {
    "Throughput",
    "Consumer lag",
    "Emit latency",
    "Recovery",
    "Dead letters by reason",
    "Average price per ticker",
}
METRIC = re.compile(r"\b(?:tradestats|faust)_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    for row in dashboard["panels"]:
        panels.extend(row.get("panels", []))
    return panels


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]


def test_required_panels(dashboard: dict[str, Any]) -> None:
    titles = {panel["title"] for panel in _panels(dashboard)}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles


def test_queries_use_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = app_metric_names()
    used = {name for expr in _expressions(dashboard) for name in METRIC.findall(expr)}
    assert used, "no metric queried"
    unknown = used - exported - PROPOSED_METRICS
    assert not unknown, f"the dashboard queries metrics the worker does not export: {unknown}"
    assert not PROPOSED_METRICS & exported, "exported now: drop it from PROPOSED_METRICS"


def test_queries_are_balanced(dashboard: dict[str, Any]) -> None:
    for expr in _expressions(dashboard):
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr


def test_panels_use_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    """One dashboard for compose and Kubernetes: the Prometheus datasource is a variable."""
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    assert dashboard["uid"] == "tradestats"


def test_compose_prometheus_labels_series_by_pod() -> None:
    """The dashboard groups by pod, as Kubernetes discovery labels series."""
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "tradestats"]
    assert any(rule["target_label"] == "pod" for rule in job["relabel_configs"])
