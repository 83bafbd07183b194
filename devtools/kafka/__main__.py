"""``python -m devtools.kafka {start,stop,status,restart,env}``: the local dev broker.

The broker outlives this command; the state directory (default ``.local/kafka``) remembers
its pid and ports, so later commands find it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.kafka.broker import (
    DEFAULT_TIMEOUT,
    KAFKA_VERSION,
    SASL_PLAINTEXT,
    SSL,
    BrokerError,
    LocalKafka,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kafka",
        description=f"Run the project's local Apache Kafka {KAFKA_VERSION} broker (dev only).",
    )
    parser.add_argument(
        "command", choices=["start", "stop", "status", "restart", "env"], help="what to do"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local/kafka"),
        help="broker state directory (default: .local/kafka)",
    )
    parser.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    parser.add_argument("--sasl", action="store_true", help="add a SASL_PLAINTEXT listener")
    parser.add_argument("--tls", action="store_true", help="add SSL and SASL_SSL listeners")
    parser.add_argument("--heap", default="512m", help="JVM heap (default: 512m)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devtools.kafka: %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # probes while waiting are noisy
    kafka = LocalKafka(args.state_dir, port=args.port, sasl=args.sasl, tls=args.tls, heap=args.heap)
    try:
        return _run(args.command, kafka, args.timeout)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(command: str, kafka: LocalKafka, timeout: float) -> int:
    if command in ("start", "restart"):
        # Keep the listeners this state directory had unless more are asked for.
        kafka.sasl = kafka.sasl or SASL_PLAINTEXT in kafka.listeners
        kafka.tls = kafka.tls or SSL in kafka.listeners
        if command == "start":
            kafka.start(timeout=timeout)
        else:
            kafka.restart(timeout=timeout)
        _describe(kafka)
    elif command == "stop":
        kafka.stop()
        print(f"stopped ({kafka.state_dir})")
    elif command == "status":
        if not kafka.is_running():
            print(f"not running ({kafka.state_dir})")
            return 1
        _describe(kafka)
    else:  # env
        if not kafka.is_running():
            print(f"error: no broker running in {kafka.state_dir}", file=sys.stderr)
            return 1
        for key, value in kafka.client_env().items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


def _describe(kafka: LocalKafka) -> None:
    print(f"Kafka {KAFKA_VERSION} running, pid {kafka.pid}, state {kafka.state_dir}")
    for key, value in kafka.client_env().items():
        if "PASSWORD" not in key:
            print(f"  {key}={value}")
    print(f"  log: {kafka.log_file}")


if __name__ == "__main__":
    sys.exit(main())
