"""Locating the external validators the deployment tests run, and the repository's files.

hadolint, check-jsonschema, kubernetes-validate and checkov live in a virtualenv of their own
(``.local/tools``, installed from ``tests/deploy/requirements-tools.txt``): checkov's
dependencies conflict with the project's pins. ``TRADESTATS_TOOLS_BIN`` overrides the place;
the PATH is searched last. kubectl comes from the machine (``/usr/bin/kubectl``).

A missing tool fails the test under CI (``CI`` set and not false) and skips it elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "REPO",
    "SHUTDOWN_SECONDS",
    "TOOLS_BIN",
    "app_metric_names",
    "app_paths",
    "in_ci",
    "require_tool",
    "run",
    "settings_env_names",
]

REPO = Path(__file__).resolve().parents[2]
#: SIGTERM to exit, at most: the pods' terminationGracePeriodSeconds (measured by
#: test_image_recipe.py).
SHUTDOWN_SECONDS = 30
TOOLS_BIN = Path(os.environ.get("TRADESTATS_TOOLS_BIN", REPO / ".local" / "tools" / "bin"))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@cache
def _find(name: str) -> str | None:
    candidate = TOOLS_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The tool's executable; fails under CI, skips elsewhere, when it is not installed."""
    found = _find(name)
    if found is None:
        message = (
            f"{name} not found in {TOOLS_BIN} or on PATH: install the deployment validators "
            "with `make tools` (a venv in .local/tools from tests/deploy/requirements-tools.txt)"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(args: Sequence[str], *, timeout: float = 300, cwd: Path = REPO) -> str:
    """Run a validator; fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


@cache
def settings_env_names() -> frozenset[str]:
    """The environment variables tradestats.settings.Settings reads (upper-cased fields)."""
    from tradestats.settings import Settings

    return frozenset(name.upper() for name in Settings.model_fields)


@cache
def _service() -> Any:
    """The worker's faust app, built but not started (it connects to nothing)."""
    from tradestats.service.app import build_app
    from tradestats.settings import load_settings

    return build_app(load_settings())


def app_paths() -> frozenset[str]:
    """The HTTP paths the worker's web server registers."""
    router = _service().app.web.web_app.router
    return frozenset(route.resource.canonical for route in router.routes())


def app_metric_names() -> frozenset[str]:
    """Every series name the worker's registry exposes (faust's sensors included)."""
    names = set()
    for family in _service().metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return frozenset(names)
