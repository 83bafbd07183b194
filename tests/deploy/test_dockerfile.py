"""The Dockerfile: hadolint-clean, and the properties the image must have, read from the file.

What the image *runs* is exercised by test_image_recipe.py (its build steps replayed here).
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.deploy.dockerfile import Stage, dockerignore_admits, parse
from tests.deploy.tools import REPO, app_paths, require_tool, run, settings_env_names
from tradestats.settings import Settings

DOCKERFILE = REPO / "Dockerfile"
PINNED_BASE = re.compile(r"^python:(?P<version>3\.\d+\.\d+)-slim-bookworm@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_is_clean() -> None:
    """Zero findings at every level; an inline `# hadolint ignore=` needs a reason beside it."""
    hadolint = require_tool("hadolint")
    run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = line.split("hadolint ignore=", 1)[1].split(maxsplit=1)[1:]
            previous = lines[number - 1].strip() if number else ""
            assert reason or previous.startswith("#"), f"line {number + 1}: unjustified ignore"


def test_multi_stage_on_one_pinned_base(stages: list[Stage]) -> None:
    assert [stage.name for stage in stages] == ["builder", "runtime"]
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, "builder and runtime must share the base image"
    match = PINNED_BASE.match(bases.pop())
    assert match, "base image pinned by full patch tag and digest"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    minor = ".".join(match["version"].split(".")[:2])
    assert f">={minor}" in project["requires-python"]


def test_builder_builds_wheels_with_the_constraints(stages: list[Stage]) -> None:
    builder = stages[0]
    commands = " && ".join(step.run_parts()[1] for step in builder.all("RUN"))
    assert "pip wheel --no-deps" in commands
    assert "--constraint constraints.txt" in commands
    copied = {word for copy in builder.all("COPY") for word in copy.value.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt"} <= copied


def test_runtime_installs_offline_without_caches_or_compilers(runtime: Stage) -> None:
    text = " ".join(instruction.value for instruction in runtime.instructions)
    assert "apt-get" not in text
    assert "gcc" not in text
    installs = [step for step in runtime.all("RUN") if "-m pip " in step.value]
    assert len(installs) == 1
    mounts, command = installs[0].run_parts()
    assert {"type": "bind", "from": "builder"}.items() <= mounts[0].items()
    for flag in ("--no-index", "--no-cache-dir", "--constraint"):
        assert flag in command
    assert not runtime.all("COPY"), "wheels come through a bind mount, not a layer"
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")


def test_runs_as_a_fixed_non_root_user(runtime: Stage) -> None:
    user = runtime.last("USER").value
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), "numeric uid:gid (runAsNonRoot)"
    uid = user.split(":")[0]
    assert f"--uid {uid}" in runtime.all("RUN")[0].value
    assert f"--owner={uid}" in runtime.all("RUN")[0].value  # it owns DATA_DIR


def test_data_dir_is_the_volume(runtime: Stage) -> None:
    env = runtime.env()
    assert runtime.last("VOLUME").exec_form() == [env["DATA_DIR"]]
    # the variables the image sets for the app are settings
    app_env = {key for key in env if not key.startswith(("PYTHON", "PIP_"))}
    app_env -= {"VIRTUAL_ENV", "PATH"}
    assert app_env == {"DATA_DIR"}
    assert app_env <= settings_env_names()


def test_entrypoint_port_and_healthcheck(runtime: Stage) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert runtime.last("ENTRYPOINT").exec_form() == ["tradestats"]
    assert "tradestats" in project["scripts"]
    assert runtime.last("CMD").exec_form() == ["worker"]
    assert runtime.last("EXPOSE").value == str(Settings.model_fields["web_port"].default)
    healthcheck = runtime.last("HEALTHCHECK").value
    command = healthcheck[healthcheck.index("CMD") + 3 :].strip()
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]  # only what the image has: no curl
    assert "urllib.request" in argv[2]
    paths = re.findall(r"/[a-z]+(?=')", argv[2])
    assert paths == ["/health"]
    assert paths[0] in app_paths()


def test_dockerignore_is_an_allowlist_of_what_is_copied(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allowlist: ignore everything first"
    copied = {
        word.rstrip("/")
        for stage in stages
        for copy in stage.all("COPY")
        if "--from" not in copy.value
        for word in copy.value.split()[:-1]
    }
    for path in copied:
        assert dockerignore_admits(patterns, path), f"{path} is copied but ignored"
    for path in REPO.iterdir():  # nothing else at the top level reaches the build context
        if path.name not in copied:
            assert not dockerignore_admits(patterns, path.name), path.name
    for path in ("tradestats/__pycache__/cli.cpython-311.pyc", "tradestats/x.pyc"):
        assert not dockerignore_admits(patterns, path)
    assert not dockerignore_admits(patterns, "devtools/kafka/pom.xml")  # dev tooling stays out
