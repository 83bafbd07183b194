"""``python -m devtools.docker``: the local Docker engine, the stand-in images, compose.

    python -m devtools.docker engine start|stop|status|env
    python -m devtools.docker images [--force]     # build the stand-ins (cached)
    python -m devtools.docker build                # tradestats:dev from the Dockerfile
    python -m devtools.docker compose ARGS...      # docker compose with the stand-ins override

The engine outlives these commands; ``engine stop`` stops it whoever started it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from devtools.docker import (
    STANDINS,
    STANDINS_OVERRIDE,
    Compose,
    DockerEngine,
    EngineError,
    build_project_image,
    ensure_standins,
)
from devtools.docker.images import REPO


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.docker",
        description="The project's local Docker engine and stand-in images (dev and CI only).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    engine = commands.add_parser("engine", help="start, stop or show the engine")
    engine.add_argument("action", choices=["start", "stop", "status", "env"])
    images = commands.add_parser("images", help="build the stand-in images that are missing")
    images.add_argument("--force", action="store_true", help="rebuild even if up to date")
    commands.add_parser("build", help="build tradestats:dev from the project's Dockerfile")
    compose = commands.add_parser(
        "compose",
        help="docker compose on docker-compose.yml with the stand-ins (project tradestats)",
    )
    compose.add_argument("args", nargs=argparse.REMAINDER, help="compose arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devtools.docker: %(message)s")
    engine = DockerEngine()
    try:
        return _run(args, engine)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, engine: DockerEngine) -> int:
    if args.command == "engine":
        return _engine(args.action, engine)
    engine.start()
    if args.command == "images":
        ensure_standins(engine, force=args.force)
        for standin in STANDINS:
            print(f"{standin.ref:48} stands in for {standin.replaces}")
    elif args.command == "build":
        print(build_project_image(engine))
    else:
        ensure_standins(engine)
        compose = Compose(
            engine, "tradestats", [REPO / "docker-compose.yml", STANDINS_OVERRIDE], REPO
        )
        return compose(*args.args, check=False, timeout=None, capture=False).returncode
    return 0


def _engine(action: str, engine: DockerEngine) -> int:
    if action == "start":
        engine.start()
        print(f"running: export DOCKER_HOST={engine.host}")
    elif action == "stop":
        if not engine.stop(even_adopted=True):
            print(f"still in use by another process, left running ({engine.state_dir})")
            return 1
        print(f"stopped ({engine.state_dir})")
    elif action == "status":
        if not engine.is_running():
            print(f"not running ({engine.state_dir})")
            return 1
        pids = ", ".join(f"{name} {pid}" for name, pid in engine.pids().items())
        print(f"running ({pids}): DOCKER_HOST={engine.host}")
    else:
        if not engine.is_running():
            print(f"error: no engine running in {engine.state_dir}", file=sys.stderr)
            return 1
        for key, value in engine.env().items():
            print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
