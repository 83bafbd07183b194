"""docker-compose.yml: valid per the compose specification, and wired the way the app reads it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.kafka import KAFKA_VERSION
from tests.deploy.dockerfile import parse
from tests.deploy.tools import REPO, app_paths, require_tool, run, settings_env_names
from tradestats.cli import main

COMPOSE = REPO / "docker-compose.yml"
WORKERS = ("worker-0", "worker-1", "worker-2")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def _published(port: str) -> tuple[str, int, int]:
    """(host address, host port, container port) of a ``ports:`` entry."""
    address, host, container = port.split(":")
    return address, int(host), int(container)


@pytest.fixture(scope="module")
def project_image(services: dict[str, Any]) -> str:
    """The image built from the Dockerfile: by exactly one service, so it is built once."""
    (builder,) = [
        service for service in services.values() if service.get("build", {}).get("context") == "."
    ]
    assert builder["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    image: str = builder["image"]
    return image


def _ours(services: dict[str, Any], project_image: str) -> list[str]:
    return [name for name, service in services.items() if service.get("image") == project_image]


def test_valid_against_the_compose_specification() -> None:
    checker = require_tool("check-jsonschema")
    run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])


def test_environment_names_are_settings(services: dict[str, Any], project_image: str) -> None:
    """tradestats services get only variables Settings reads (the topic job shares them)."""
    known = settings_env_names()
    ours = _ours(services, project_image)
    assert sorted(ours) == sorted([*WORKERS, "loadgen"])
    for name in [*ours, "kafka-init"]:
        environment = services[name]["environment"]
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        unknown = set(environment) - known
        assert not unknown, f"{name} sets {unknown}, which tradestats does not read"


def test_images_are_pinned(services: dict[str, Any], project_image: str) -> None:
    for name, service in services.items():
        if service["image"] != project_image:
            assert DIGEST.search(service["image"]), f"{name}: pin the image by digest"
    kafka = services["kafka"]["image"]
    assert kafka.startswith(f"apache/kafka:{KAFKA_VERSION}@"), "the version the tests run"
    assert services["kafka-init"]["image"] == kafka


def test_kafka_is_a_healthy_kraft_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "healthcheck" in kafka
    check = " ".join(kafka["healthcheck"]["test"])
    for jvm in (".sh", "java"):  # a JVM per health check costs seconds of CPU
        assert jvm not in check
    advertised = {
        listener.split("://", 1)[1] for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in [*WORKERS, "loadgen", "kafka-init"]:
        bootstrap = services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert set(bootstrap.split(",")) <= advertised, name


def test_topics_created_once_with_the_configured_partitions(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["restart"] == "no"
    script = " ".join(init["command"])
    for variable in ("TRADES_TOPIC", "STATS_TOPIC", "DLQ_TOPIC", "TOPIC_PARTITIONS"):
        assert f"$${{{variable}}}" in script, variable  # $$: expanded in the container
    assert "--if-not-exists" in script
    env = init["environment"]
    for name in [*WORKERS, "loadgen"]:
        service_env = services[name]["environment"]
        for key in ("TOPIC_PARTITIONS", "TRADES_TOPIC", "STATS_TOPIC", "DLQ_TOPIC", "APP_ID"):
            assert service_env[key] == env[key], (name, key)
        assert services[name]["depends_on"]["kafka-init"]["condition"] == (
            "service_completed_successfully"
        )


def test_three_workers_like_a_statefulset(services: dict[str, Any]) -> None:
    data_dir = parse(REPO / "Dockerfile")[-1].env()["DATA_DIR"]
    volumes, host_ports = set(), set()
    for name in WORKERS:
        worker = services[name]
        env = worker["environment"]
        # static membership and a canonical URL other workers can reach
        assert env["POD_NAME"] == name
        assert env["WEB_HOST"] == name == worker["hostname"]
        assert "CANONICAL_URL" not in env
        web_port = int(env.get("WEB_PORT", 6066))
        ((_, host, container),) = (_published(port) for port in worker["ports"])
        assert container == web_port
        host_ports.add(host)
        ((volume, target),) = (mount.split(":") for mount in worker["volumes"])
        assert target == env.get("DATA_DIR", data_dir)
        volumes.add(volume)
        assert worker["command"] == ["worker"]
        assert worker["read_only"] is True
        assert any(mount.startswith("/tmp") for mount in worker["tmpfs"])
        assert worker["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in worker["security_opt"]
    assert len(volumes) == len(host_ports) == len(WORKERS)


def test_ports_are_published_on_loopback_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert _published(port)[0] == "127.0.0.1", f"{name}: {port} is open to the network"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} undeclared"


def test_loadgen_command_is_valid(services: dict[str, Any]) -> None:
    loadgen = services["loadgen"]
    subcommand, *args = loadgen["command"]
    assert subcommand == "loadgen"
    main.commands["loadgen"].make_context("loadgen", list(args))  # click accepts the options
    assert loadgen["healthcheck"] == {"disable": True}  # no web server to check


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file a bind mount of ``service`` puts at ``container_path``."""
    for source, target, *_ in (mount.split(":") for mount in service["volumes"]):
        if source.startswith("./") and (container_path + "/").startswith(target + "/"):
            return REPO / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_prometheus_scrapes_every_worker(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    (flag,) = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config_file = _host_path(prometheus, flag.split("=", 1)[1])
    config = yaml.safe_load(config_file.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "tradestats"]
    assert job.get("metrics_path", "/metrics") in app_paths()
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    expected = {f"{name}:{services[name]['environment'].get('WEB_PORT', 6066)}" for name in WORKERS}
    assert targets == expected


def test_grafana_is_optional(services: dict[str, Any]) -> None:
    """A missing Grafana image must not take `up` down: it is behind a profile; the rest not."""
    assert services["grafana"]["profiles"] == ["grafana"]
    assert [name for name, service in services.items() if "profiles" in service] == ["grafana"]


def test_grafana_is_provisioned(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounts = {
        target: REPO / source
        for source, target, *_ in (mount.split(":") for mount in grafana["volumes"])
        if source.startswith("./")
    }
    sources = {
        yaml.safe_load(path.read_text())["datasources"][0]["url"]
        for path in mounts["/etc/grafana/provisioning/datasources"].glob("*.yml")
    }
    assert sources == {"http://prometheus:9090"}
    assert [_published(port)[1:] for port in services["prometheus"]["ports"]] == [(9090, 9090)]
    (provider_file,) = mounts["/etc/grafana/provisioning/dashboards"].glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards_dir = mounts[provider["options"]["path"]]
    assert (dashboards_dir / "tradestats.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/tradestats.json"
