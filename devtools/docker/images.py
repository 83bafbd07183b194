"""Local stand-ins for the images no registry serves here, and the project's own image.

Every stand-in is built on this machine from Debian packages and Maven Central jars:

    tradestats-standin/debian:bookworm           debootstrap --variant=minbase, docker import
    tradestats-standin/python:3.11-slim-bookworm for python:3.11.15-slim-bookworm
    tradestats-standin/kafka:4.1.2               for apache/kafka:4.1.2
    tradestats-standin/prometheus:bookworm       for prom/prometheus
    tradestats-standin/dockerfile:1              for docker/dockerfile:1 (BuildKit's frontend,
                                                 built from the Go module proxy)

Each image carries the hash of its recipe (the files under ``recipes/``, its build arguments,
its base's hash) in the label ``org.tradestats.recipe``; an image whose label matches is not
built again, so only the first run on a machine pays for the builds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools.debian import ensure_packages
from devtools.docker.compose import Compose
from devtools.docker.engine import DockerEngine, EngineError

__all__ = [
    "DEBIAN_IMAGE",
    "FRONTEND_IMAGE",
    "KAFKA_IMAGE",
    "PROJECT_IMAGE",
    "PROMETHEUS_IMAGE",
    "PYTHON_IMAGE",
    "RECIPE_LABEL",
    "STANDINS",
    "STANDINS_OVERRIDE",
    "StandIn",
    "build_project_image",
    "ensure_standins",
    "save_image",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
RECIPES = Path(__file__).resolve().parent / "recipes"
STANDINS_OVERRIDE = Path(__file__).resolve().parent / "compose.standins.yml"
"""Compose override file that puts the stand-ins in place of the pinned official images."""
RECIPE_LABEL = "org.tradestats.recipe"
DEBIAN_IMAGE = "tradestats-standin/debian:bookworm"
PYTHON_IMAGE = "tradestats-standin/python:3.11-slim-bookworm"
KAFKA_IMAGE = "tradestats-standin/kafka:4.1.2"
PROMETHEUS_IMAGE = "tradestats-standin/prometheus:bookworm"
FRONTEND_IMAGE = "tradestats-standin/dockerfile:1"
PROJECT_IMAGE = "tradestats:dev"
_DEBIAN_SUITE = "bookworm"
_HOST_CAS = Path("/usr/local/share/ca-certificates")
_MAVEN_COPY = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_BUILD_TIMEOUT_S = 1200


@dataclass(frozen=True)
class StandIn:
    """A local image built from ``recipes/<recipe>`` (on the Debian base, unless ``scratch``)."""

    ref: str
    replaces: str
    recipe: str
    scratch: bool = False


STANDINS: tuple[StandIn, ...] = (
    StandIn(PYTHON_IMAGE, "python:3.11.15-slim-bookworm", "python"),
    StandIn(KAFKA_IMAGE, "apache/kafka:4.1.2", "kafka"),
    StandIn(PROMETHEUS_IMAGE, "prom/prometheus:v3.10.0", "prometheus"),
    StandIn(FRONTEND_IMAGE, "docker/dockerfile:1", "dockerfile", scratch=True),
)


def ensure_standins(engine: DockerEngine, *, force: bool = False) -> dict[str, str]:
    """Build whatever stand-in is missing or out of date; returns {upstream: local ref}."""
    with _images_lock(engine), concurrent.futures.ThreadPoolExecutor(len(STANDINS)) as pool:
        # The frontend (a Go build: CPU) goes on while debootstrap and apt wait on the network.
        early = [pool.submit(_ensure_standin, engine, s, "", force) for s in STANDINS if s.scratch]
        base = _ensure_debian(engine, force)
        on_base = [
            pool.submit(_ensure_standin, engine, s, base, force) for s in STANDINS if not s.scratch
        ]
        for future in [*early, *on_base]:
            future.result()
    return {standin.replaces: standin.ref for standin in STANDINS}


def build_project_image(engine: DockerEngine, tag: str = PROJECT_IMAGE) -> str:
    """The worker image from the project's Dockerfile as it ships, on the stand-ins.

    Built by ``docker compose build`` with ``compose.standins.yml``, as the tests build it:
    Debian's docker client has no ``--build-context``, which puts the Python stand-in in place
    of the digest-pinned base.
    """
    ensure_standins(engine)
    log.info("building %s from %s", PROJECT_IMAGE, REPO / "Dockerfile")
    compose = Compose(engine, "tradestats", [REPO / "docker-compose.yml", STANDINS_OVERRIDE], REPO)
    compose("build", "worker-0", timeout=_BUILD_TIMEOUT_S)
    if tag != PROJECT_IMAGE:
        engine.docker("tag", PROJECT_IMAGE, tag)
    return tag


def save_image(engine: DockerEngine, ref: str, path: Path) -> Path:
    """``docker save`` one image to a tarball (e.g. for ``ctr images import``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.docker("save", "--output", str(path), ref, timeout=_BUILD_TIMEOUT_S)
    return path


# -- the Debian base ---------------------------------------------------------------------------


def _debian_mirror() -> str:
    return os.environ.get("TRADESTATS_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def _ensure_debian(engine: DockerEngine, force: bool) -> str:
    """debootstrap a minimal bookworm and import it; returns the recipe hash."""
    recipe = _digest([f"debootstrap --variant=minbase {_DEBIAN_SUITE} {_debian_mirror()}"])
    if not force and _label(engine, DEBIAN_IMAGE) == recipe:
        return recipe
    ensure_packages("debootstrap")
    rootfs = _build_dir(engine, "debian-rootfs")
    log.info("debootstrap %s into %s (about a minute)", _DEBIAN_SUITE, rootfs)
    _run(["debootstrap", "--variant=minbase", _DEBIAN_SUITE, str(rootfs), _debian_mirror()])
    for package in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        package.unlink()  # the package lists stay: images on this base install without update
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        engine.docker(
            "import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", "--change", 'CMD ["bash"]',
            "-", DEBIAN_IMAGE, stdin=tar.stdout,
        )  # fmt: skip
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    shutil.rmtree(rootfs)
    return recipe


# -- images built from recipes -----------------------------------------------------------------


def _ensure_standin(engine: DockerEngine, standin: StandIn, base: str, force: bool) -> None:
    recipe_dir = RECIPES / standin.recipe
    extras = _extra_files(standin.recipe)
    recipe = _digest([base, *_tree_lines(recipe_dir), *(f"{k}={v}" for k, v in extras.items())])
    if not force and _label(engine, standin.ref) == recipe:
        return
    context = _build_dir(engine, standin.recipe)
    shutil.copytree(recipe_dir, context, dirs_exist_ok=True)
    if standin.recipe == "python":
        _gather_cas(context / "ca-certificates")
    elif standin.recipe == "kafka":
        _gather_jars(context)
    elif standin.recipe == "dockerfile":
        _build_frontend(context)
    log.info("building %s (stand-in for %s)", standin.ref, standin.replaces)
    base_arg = [] if standin.scratch else ["--build-arg", f"BASE={DEBIAN_IMAGE}"]
    engine.docker(
        "build", "--progress=plain", "--label", f"{RECIPE_LABEL}={recipe}", *base_arg,
        "--tag", standin.ref, str(context), timeout=_BUILD_TIMEOUT_S,
    )  # fmt: skip
    shutil.rmtree(context)


def _extra_files(recipe: str) -> Mapping[str, str]:
    """What from the host goes into a recipe's context besides its files (for the hash)."""
    if recipe != "python":
        return {}  # kafka's jars are fixed by its pom.xml, which is hashed with the recipe
    return {str(path): _file_hash(path) for path in sorted(_host_cas())}


def _host_cas() -> list[Path]:
    return sorted(_HOST_CAS.rglob("*.crt")) if _HOST_CAS.is_dir() else []


def _gather_cas(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in _host_cas():
        shutil.copy2(path, target / path.name)


def _gather_jars(context: Path) -> None:
    """The Kafka jars of ``pom.xml`` (Maven resolves them, from ~/.m2 or Maven Central)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EngineError("Maven ('mvn') is needed to fetch the Kafka jars from Maven Central")
    cmd = [mvn, "-q", "-B", "-f", str(context / "pom.xml"), _MAVEN_COPY]
    cmd += [f"-DoutputDirectory={context / 'libs'}", "-DincludeScope=runtime"]
    _run(cmd)


def _build_frontend(context: Path) -> None:
    """BuildKit's dockerfile-frontend at the version of ``go.mod``, static, with the host's Go."""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise EngineError("Go ('go' on PATH) is needed to build the Dockerfile frontend stand-in")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    package = "github.com/moby/buildkit/frontend/dockerfile/cmd/dockerfile-frontend"
    cmd = ["nice", "-n", "19", go, "build", "-trimpath", "-o", "dockerfile-frontend", package]
    _run(cmd, cwd=context, env=env)


# -- helpers -----------------------------------------------------------------------------------


def _label(engine: DockerEngine, ref: str) -> str | None:
    """The recipe label of a local image, or None when there is no such image."""
    found = engine.docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', ref,
        check=False,
    )  # fmt: skip
    return found.stdout.strip() if found.returncode == 0 else None


def _tree_lines(directory: Path) -> list[str]:
    """One line per file: relative path, mode and content hash (what a build depends on)."""
    return [
        f"{path.relative_to(directory)} {path.stat().st_mode & 0o777:o} {_file_hash(path)}"
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _build_dir(engine: DockerEngine, name: str) -> Path:
    directory = engine.state_dir / "build" / name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise EngineError(f"{' '.join(cmd)} exited {done.returncode}:\n{output}")


@contextlib.contextmanager
def _images_lock(engine: DockerEngine) -> Iterator[None]:
    """One builder of stand-ins at a time per state directory (sessions share the engine)."""
    engine.state_dir.mkdir(parents=True, exist_ok=True)
    with (engine.state_dir / "images.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
