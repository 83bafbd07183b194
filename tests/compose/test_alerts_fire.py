"""The alerts in the compose stack's real Prometheus (issue 13), with the rules file as it ships.

1. Prometheus loaded ``k8s/monitoring/prometheus/rules/tradestats.rules.yml`` unchanged: the
   file it mounts is the repository's byte for byte, and ``/api/v1/rules`` lists every group and
   rule of it with the same expression, ``for:``, labels and annotations, each evaluated
   without error.
2. ``docker compose stop`` of one worker: ``TradestatsTargetDown`` goes pending for that worker
   alone, fires once its ``for:`` (1 minute, not shortened) has passed, and resolves after
   ``docker compose start`` brought the worker back. The times go to the stack's timings.

This module runs before ``test_stack.py`` on the same stack: the stop is marked on the package's
``up_sampler`` (``away``/``back``), and the worker is ready again before the test ends, so the
later tests find every service up and check their results through the stop's rebalances too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import yaml

from devtools.prometheusrule import RULES
from tests.compose.stack import WORKERS, Stack, UpSampler

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

T = TypeVar("T")
ALERT = "TradestatsTargetDown"
STOPPED = "worker-2"
#: Where docker-compose.yml mounts the rules file in the Prometheus container.
MOUNTED_RULES = "/etc/prometheus/rules/tradestats.rules.yml"


def test_prometheus_loaded_the_rules_file_unchanged(compose_stack: Stack) -> None:
    stack = compose_stack
    mounted = stack.compose("exec", "-T", "prometheus", "cat", MOUNTED_RULES).stdout
    assert mounted == RULES.read_text(), (
        "Prometheus mounts another rules file than the repository's"
    )
    AlertWatch(stack).until(
        lambda: rule_groups(stack) and not unevaluated(stack),
        within=120,
        what="every rule evaluated",
        seen=lambda: unevaluated(stack),
    )
    groups = yaml.safe_load(RULES.read_text())["groups"]
    loaded = rule_groups(stack)
    assert sorted(loaded) == sorted(group["name"] for group in groups), sorted(loaded)
    for group in groups:
        assert loaded[group["name"]]["file"].endswith("rules/tradestats.rules.yml"), group["name"]
        assert [listed(rule) for rule in loaded[group["name"]]["rules"]] == [
            as_listed(rule) for rule in group["rules"]
        ], f"group {group['name']} differs from the rules file"
    alerts = [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
    print(f"Prometheus loaded {len(alerts)} alerts unchanged: {', '.join(alerts)}")


def test_a_stopped_worker_fires_target_down_until_it_is_back(
    compose_stack: Stack, up_sampler: UpSampler
) -> None:
    stack = compose_stack
    watch = AlertWatch(stack)

    def up_rule() -> dict[str, str]:
        return {row["metric"]["pod"]: row["value"][1] for row in stack.query(UP_RULE)}

    watch.until(
        lambda: up_rule() == dict.fromkeys(WORKERS, "1"),
        within=120,
        what=f"{UP_RULE} == 1 for every worker",
        seen=up_rule,
    )
    assert not target_down(stack), f"{ALERT} active before any worker stopped"

    up_sampler.away(STOPPED)
    stopped = time.monotonic()
    stack.timed(f"stop {STOPPED}", "stop", STOPPED)
    pending = watch.until(lambda: target_down(stack), within=180, what=f"{ALERT} pending")
    stack.timings[f"{ALERT} pending after stop"] = time.monotonic() - stopped
    assert set(pending) == {STOPPED}, f"{ALERT} for {sorted(pending)}, only {STOPPED} stopped"
    firing = watch.until(lambda: target_down(stack, "firing"), within=240, what=f"{ALERT} firing")
    stack.timings[f"{ALERT} firing after stop"] = time.monotonic() - stopped
    alert = firing[STOPPED]
    instance = alert["labels"]["instance"]
    assert alert["labels"]["severity"] == "warning", alert
    assert alert["annotations"]["summary"] == (
        f"tradestats worker {STOPPED} ({instance}) cannot be scraped"
    ), alert
    assert alert["annotations"]["runbook_url"].endswith("#tradestatstargetdown"), alert
    assert set(target_down(stack)) == {STOPPED}, target_down(stack)

    started = time.monotonic()
    stack.compose("start", STOPPED)
    stack.wait_ready([STOPPED], within=180)
    stack.timings[f"stopped {STOPPED} back ready"] = time.monotonic() - started
    up_sampler.back(STOPPED)
    watch.until(lambda: not target_down(stack), within=180, what=f"{ALERT} resolved")
    stack.timings[f"{ALERT} resolved after start"] = time.monotonic() - started
    assert up_rule() == dict.fromkeys(WORKERS, "1"), up_rule()

    faults = up_sampler.faults()
    assert not faults, f"up == 0 while meant to be up: {faults[:20]}\n{stack.logs(*WORKERS)}"
    print(f"alert states seen, s after `stop {STOPPED}`:\n{watch.report(stopped)}")


# -- the rules Prometheus lists ----------------------------------------------------------------

UP_RULE = "instance:tradestats_up:bool"
_DURATION = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def squeezed(expression: str) -> str:
    """An expression without whitespace: Prometheus lists expressions as it prints them."""
    return re.sub(r"\s+", "", expression)


def seconds(duration: str) -> int:
    """A rules-file duration (``1m``, ``1h30m``) in seconds, as ``/api/v1/rules`` lists it."""
    parts = _DURATION.findall(duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(int(number) * _SECONDS[unit] for number, unit in parts)


def as_listed(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule of the file the way ``/api/v1/rules`` lists it (recording rules: no ``for:``,
    labels or annotations here)."""
    if "record" in rule:
        return {"name": rule["record"], "type": "recording", "query": squeezed(rule["expr"])}
    return {
        "name": rule["alert"],
        "type": "alerting",
        "query": squeezed(rule["expr"]),
        "duration": seconds(rule.get("for", "0s")),
        "labels": rule.get("labels", {}),
        "annotations": rule.get("annotations", {}),
    }


def listed(rule: dict[str, Any]) -> dict[str, Any]:
    """The fields of an ``/api/v1/rules`` rule that come from the rules file."""
    fields = ("name", "type", "duration", "labels", "annotations")
    return {key: rule[key] for key in fields if key in rule} | {"query": squeezed(rule["query"])}


def rule_groups(stack: Stack) -> dict[str, dict[str, Any]]:
    """``/api/v1/rules``, by group name."""
    return {group["name"]: group for group in stack.prometheus("/api/v1/rules")["groups"]}


def unevaluated(stack: Stack) -> list[tuple[str, str, str]]:
    """(rule, health, last error) of every rule not evaluated successfully (yet)."""
    return [
        (rule["name"], rule["health"], rule.get("lastError", ""))
        for group in rule_groups(stack).values()
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]


# -- alerts ------------------------------------------------------------------------------------


def target_down(stack: Stack, state: str | None = None) -> dict[str, dict[str, Any]]:
    """The active ``TradestatsTargetDown`` alerts (in ``state``, or any), by pod."""
    return {
        alert["labels"]["pod"]: alert
        for alert in stack.prometheus("/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == ALERT and state in (None, alert["state"])
    }


class AlertWatch:
    """Waits on conditions, recording every change of the active alerts seen meanwhile: all of
    them, not only the one awaited (what else a stopped worker pages for), each with its value
    when its state changed."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.since = time.monotonic()
        self.changes: list[tuple[float, dict[tuple[str, str, str], str]]] = []

    def until(
        self,
        condition: Callable[[], T],
        within: float,
        what: str,
        seen: Callable[[], object] = lambda: "",
    ) -> T:
        """Polls ``condition()`` every second until it is truthy; returns that value. A timeout
        fails with ``seen()``, the alerts seen and the logs."""
        deadline = time.monotonic() + within
        while True:
            self._record()
            value = condition()
            if value:
                return value
            assert time.monotonic() < deadline, (
                f"no {what} after {within:g} s {seen()}; alerts seen (s after the watch began):\n"
                f"{self.report()}\n{self.stack.logs(STOPPED, 'prometheus', tail=40)}"
            )
            time.sleep(1)

    def report(self, since: float | None = None) -> str:
        origin = self.since if since is None else since
        lines = []
        for at, active in self.changes:
            alerts = [f"{'/'.join(key)}={value}" for key, value in sorted(active.items())]
            lines.append(f"  {at - origin:6.1f}: {', '.join(alerts) or 'none'}")
        return "\n".join(lines)

    def _record(self) -> None:
        active = {
            (alert["labels"]["alertname"], alert["labels"].get("pod", "-"), alert["state"]): (
                f"{float(alert['value']):.4g}"
            )
            for alert in self.stack.prometheus("/api/v1/alerts")["alerts"]
        }
        if not self.changes or self.changes[-1][1].keys() != active.keys():
            self.changes.append((time.monotonic(), active))
