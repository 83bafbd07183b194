"""The project's local Docker engine, Compose v2 and the stand-in images (dev and CI only).

    engine = DockerEngine().start()          # adopts the machine's running engine, if any
    ensure_standins(engine)                  # builds missing stand-ins (cached by recipe hash)
    build_project_image(engine)              # tradestats:dev from the Dockerfile, on the stand-ins
    engine.docker("save", "--output", "worker.tar", "tradestats:dev")
    Compose(engine, "demo", [REPO / "docker-compose.yml", STANDINS_OVERRIDE], REPO)("up", "-d")
    engine.stop()                            # only if started here and nobody else uses it

See ``python -m devtools.docker --help``.
"""

from devtools.docker.compose import COMPOSE_VERSION, Compose, compose_binary
from devtools.docker.engine import DOCKER_CLI, DockerEngine, EngineError, default_state_dir
from devtools.docker.images import (
    DEBIAN_IMAGE,
    FRONTEND_IMAGE,
    KAFKA_IMAGE,
    PROJECT_IMAGE,
    PROMETHEUS_IMAGE,
    PYTHON_IMAGE,
    STANDINS,
    STANDINS_OVERRIDE,
    StandIn,
    build_project_image,
    ensure_standins,
    save_image,
)

__all__ = [
    "COMPOSE_VERSION",
    "DEBIAN_IMAGE",
    "DOCKER_CLI",
    "FRONTEND_IMAGE",
    "KAFKA_IMAGE",
    "PROJECT_IMAGE",
    "PROMETHEUS_IMAGE",
    "PYTHON_IMAGE",
    "STANDINS",
    "STANDINS_OVERRIDE",
    "Compose",
    "DockerEngine",
    "EngineError",
    "StandIn",
    "build_project_image",
    "compose_binary",
    "default_state_dir",
    "ensure_standins",
    "save_image",
]
