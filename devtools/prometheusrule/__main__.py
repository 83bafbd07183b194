"""``python -m devtools.prometheusrule [--check]``: write (or check) the PrometheusRule."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.prometheusrule import PROMETHEUS_RULE, RULES, render, stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.prometheusrule",
        description=f"Write {PROMETHEUS_RULE.name} of the prometheus-operator overlay from "
        f"{RULES.name}.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the file is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        if stale():
            print(f"{PROMETHEUS_RULE} is stale: run python -m devtools.prometheusrule")
            return 1
        return 0
    PROMETHEUS_RULE.write_text(render(RULES.read_text()))
    print(f"wrote {PROMETHEUS_RULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
