"""The alerts: promtool's checks and unit tests, the runbook, the PrometheusRule, real metrics.

promtool comes from Debian's ``prometheus`` package (2.42), installed here when missing (without
starting its server); under CI a promtool that cannot be installed fails the tests.
``TRADESTATS_PROMTOOL`` names another one instead, e.g. a promtool 3 built from the Go module
proxy: the unit tests hold under both versions' range semantics.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.debian import DebianError, ensure_packages
from devtools.prometheusrule import PROMETHEUS_RULE, RULES, render
from tests.conftest import Broker
from tests.deploy.manifests import Rendered
from tests.deploy.tools import REPO, app_metric_names, in_ci, run
from tests.integration.harness import Topics, Worker, create_topics, produce, worker_env
from tests.integration.test_end_to_end import random_trades

PROMETHEUS_CONFIG = REPO / "k8s" / "monitoring" / "prometheus" / "prometheus.yml"
UNIT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.test.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning"}
#: A worker metric in an expression: not part of a recording rule's name (level:metric:ops).
METRIC = re.compile(r"(?<![\w:])(?:tradestats|faust)_[a-z0-9_]+(?![\w:])")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
#: Labels Prometheus gives every target (the compose job, the ServiceMonitor and pod discovery).
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
#: Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}


@pytest.fixture(scope="module")
def promtool() -> str:
    chosen = os.environ.get("TRADESTATS_PROMTOOL")
    if chosen:
        return chosen
    if shutil.which("promtool") is None:
        try:
            ensure_packages("prometheus")
        except DebianError as exc:
            message = f"promtool is missing and Debian's prometheus package did not install: {exc}"
            if in_ci():
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    found = shutil.which("promtool")
    assert found, "Debian's prometheus package installed no promtool on the PATH"
    return found


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return loaded


@pytest.fixture(scope="module")
def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _expressions(groups: list[dict[str, Any]]) -> Iterator[str]:
    for group in groups:
        for rule in group["rules"]:
            yield rule["expr"]


def _unit_test_cases() -> Iterator[dict[str, Any]]:
    for path in UNIT_TESTS:
        yield from yaml.safe_load(path.read_text())["tests"]


# --- promtool ------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    run([promtool, "check", "rules", str(RULES)])


def test_compose_prometheus_loads_the_rules(promtool: str) -> None:
    """prometheus.yml's rule_files find the rules file (resolved next to prometheus.yml)."""
    out = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert f"Checking {RULES}" in out, out


def test_alerts_pass_their_promtool_unit_tests(promtool: str) -> None:
    assert UNIT_TESTS
    run([promtool, "test", "rules", *map(str, UNIT_TESTS)])


def test_every_alert_is_tested_firing_and_silent(alerts: dict[str, dict[str, Any]]) -> None:
    """promtool passes an expectation of no alert for a name no rule has: names must exist."""
    outcomes: dict[str, set[bool]] = {}
    for case in _unit_test_cases():
        for check in case.get("alert_rule_test", []):
            outcomes.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert not set(outcomes) - set(alerts), "tests of alerts that do not exist"
    untested = {name for name in alerts if outcomes.get(name) != {True, False}}
    assert not untested, f"alerts not tested both firing and silent: {sorted(untested)}"


# --- what the rules may read ----------------------------------------------------------------


def test_rules_read_only_metrics_the_worker_exports(groups: list[dict[str, Any]]) -> None:
    used = {name for expr in _expressions(groups) for name in METRIC.findall(expr)}
    assert used
    unknown = used - app_metric_names()
    assert not unknown, f"the rules read metrics the worker does not export: {unknown}"


def test_unit_tests_feed_only_series_the_worker_exports() -> None:
    fed = {
        series["series"].split("{", 1)[0]
        for case in _unit_test_cases()
        for series in case["input_series"]
    }
    unknown = fed - app_metric_names() - PROMETHEUS_SERIES
    assert not unknown, f"unit tests feed series no worker exports: {unknown}"


def _labels_read(groups: list[dict[str, Any]]) -> set[str]:
    labels = set()
    for expr in _expressions(groups):
        for clause in GROUPING.findall(expr):
            labels.update(name.strip() for name in clause.split(",") if name.strip())
        for matchers in MATCHER.findall(expr):
            labels.update(re.findall(r"(\w+)\s*[!=]", matchers))
    return labels


def _records_handled(series: dict[str, float]) -> float:
    """Trades aggregated or dead-lettered (the out-of-order ones may be late)."""
    return sum(
        value
        for key, value in series.items()
        if key.startswith(("tradestats_trades_processed_total", "tradestats_trades_dead_lettered"))
    )


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_rules_read_what_a_live_worker_exports(
    kafka: Broker, tmp_path: Path, groups: list[dict[str, Any]]
) -> None:
    """Metric and label names of the rules, against a real worker's /metrics after trades."""
    partitions = 2
    topics = Topics.unique("alerts")
    asyncio.run(create_topics(kafka.bootstrap_servers, [topics.trades], partitions))
    worker = Worker(
        "tradestats-0",
        worker_env(kafka.bootstrap_servers, topics, partitions),
        tmp_path / "data",
        tmp_path / "worker.log",
    )
    try:
        worker.start()
        worker.wait_ready(timeout=90)
        asyncio.run(
            produce(
                kafka.bootstrap_servers,
                topics.trades,
                random_trades(int(time.time() * 1000), 200, seed=13),
            )
        )
        deadline = time.monotonic() + 60
        series = worker.metrics()
        while _records_handled(series) < 200:
            assert time.monotonic() < deadline, (
                f"200 trades not handled: {_records_handled(series)}\n{worker.log_tail()}"
            )
            time.sleep(0.5)
            series = worker.metrics()
    finally:
        worker.stop_quietly()
    exported = {key.split("{", 1)[0] for key in series}
    used = {name for expr in _expressions(groups) for name in METRIC.findall(expr)}
    assert not used - exported, f"not in the live exposition: {used - exported}"
    worker_labels = {
        label for key in series for label in re.findall(r"[{,](\w+)=", key)
    }  # partition, reason, le, ...
    unknown = _labels_read(groups) - worker_labels - TARGET_LABELS
    assert not unknown, f"the rules read labels neither the worker nor Prometheus sets: {unknown}"


# --- annotations and the runbook ------------------------------------------------------------


def _runbook_sections() -> dict[str, str]:
    """Second-level headings by their GitHub anchor, with the section text."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("## "):
            anchor = re.sub(r"[^\w\- ]", "", line[3:].strip().lower()).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


def test_every_alert_has_a_summary_a_description_and_a_runbook_section(
    alerts: dict[str, dict[str, Any]],
) -> None:
    sections = _runbook_sections()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "Likely cause" in annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md", name
        assert anchor == name.lower(), name
        text = sections.get(anchor, "")
        for part in ("**Means.**", "**Confirm.**", "**Do.**"):
            assert part in text, f"runbook section {name} lacks {part}"
    alert_sections = {anchor for anchor in sections if anchor.startswith("tradestats")}
    assert alert_sections == {name.lower() for name in alerts}, "runbook sections without alert"


def test_the_runbook_states_each_threshold(alerts: dict[str, dict[str, Any]]) -> None:
    """The runbook's table: severity, duration and the thresholds of every alert."""
    rows = {}
    for line in RUNBOOK.read_text().splitlines():
        row = re.match(r"\| \[(\w+)\]\(#\w+\) \| (\w+) \| (.+) \| (\w+) \|$", line)
        if row:
            rows[row[1]] = row.groups()[1:]
    assert set(rows) == set(alerts)
    for name, rule in alerts.items():
        severity, fires_when, duration = rows[name]
        assert severity == rule["labels"]["severity"], name
        assert duration == rule.get("for", "0m"), name
        for threshold in re.findall(r"[<>]=?\s*([0-9.]+)", rule["expr"]):
            if float(threshold) != 0:
                assert re.search(rf"(?<![\w.]){re.escape(threshold)}(?![\w.])", fires_when), (
                    f"{name}: threshold {threshold} not in the runbook's table"
                )


# --- the Prometheus Operator's copy ---------------------------------------------------------


def test_prometheus_rule_is_generated_from_the_rules_file() -> None:
    assert PROMETHEUS_RULE.read_text() == render(RULES.read_text()), (
        "stale: run python -m devtools.prometheusrule"
    )


def test_operator_overlay_ships_the_same_groups(
    rendered: dict[str, Rendered], groups: list[dict[str, Any]]
) -> None:
    rule = rendered["prometheus-operator"].one("PrometheusRule", "tradestats")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == groups
    monitor = rendered["prometheus-operator"].one("ServiceMonitor")
    # kube-prometheus-stack selects both by the same release label
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]
