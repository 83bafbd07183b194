"""The stand-in override replaces exactly the official images the project names, by stand-ins
devtools.docker builds, and the worker image's base by the name its Dockerfile pins."""

from __future__ import annotations

from typing import Any

import yaml

from devtools.docker import FRONTEND_IMAGE, PYTHON_IMAGE, STANDINS, STANDINS_OVERRIDE
from tests.deploy.dockerfile import parse
from tests.deploy.tools import REPO


def _services(path: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    return loaded


def test_every_image_replaced_is_an_official_one_with_its_stand_in() -> None:
    users = _services(REPO / "docker-compose.yml")
    standins = {standin.ref: standin.replaces for standin in STANDINS}
    for name, override in _services(STANDINS_OVERRIDE).items():
        if "image" in override:
            assert override["pull_policy"] == "never", name
            official = standins[override["image"]]
            assert users[name]["image"].startswith(official.split(":")[0] + ":"), name


def test_the_worker_image_is_built_from_the_dockerfile_on_the_python_stand_in() -> None:
    stages = parse(REPO / "Dockerfile")
    (pinned_base,) = {stage.base for stage in stages}
    first_line = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert first_line == "# syntax=docker/dockerfile:1"  # what BUILDKIT_SYNTAX stands in for
    users = _services(REPO / "docker-compose.yml")
    (builder,) = [name for name, service in users.items() if "build" in service]
    build = _services(STANDINS_OVERRIDE)[builder]["build"]
    assert build["args"] == {"BUILDKIT_SYNTAX": FRONTEND_IMAGE}
    assert build["additional_contexts"] == {pinned_base: f"docker-image://{PYTHON_IMAGE}"}
    assert set(build) == {"args", "additional_contexts"}, "nothing else of the build changes"
