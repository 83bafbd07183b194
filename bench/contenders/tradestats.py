"""(a) tradestats itself, with default settings: configured by environment variables only."""

from __future__ import annotations

import re
import sys
from datetime import datetime

from bench.contenders.base import Contender, Emission, RunSpec
from bench.process import ContenderProcess, Launch

__all__ = ["Tradestats"]

_READY_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*tradestats\.service\.pipeline: ready:", re.M
)


class Tradestats(Contender):
    key = "a"
    name = "tradestats"
    title = "tradestats (default settings)"
    emission = Emission.FINAL

    def launch(self, run: RunSpec) -> Launch:
        return Launch(
            [sys.executable, "-m", "tradestats", "worker"],
            env={
                "KAFKA_BOOTSTRAP_SERVERS": run.bootstrap,
                "APP_ID": run.app_id,
                "TRADES_TOPIC": run.input_topic,
                "STATS_TOPIC": run.output_topic,
                "DLQ_TOPIC": f"{run.output_topic}-dlq",
                "TOPIC_PARTITIONS": str(run.partitions),
                "DATA_DIR": str(run.work_dir / "data"),
                "WEB_PORT": str(run.web_port),
                "WEB_HOST": "127.0.0.1",
                "LOG_LEVEL": "info",
            },
        )

    def first_record_ms(self, proc: ContenderProcess, run: RunSpec) -> int | None:
        """tradestats is not instrumented for the benchmark: the time of its log line
        ``ready: active partitions`` stands for its first record. Ready means partitions
        assigned and state restored, and fetching starts at once, so this starts its clock a
        fetch early (never late). Its web endpoints are no substitute: a worker busy with a
        backlog answers them late, which would start the clock late and flatter it."""
        try:
            text = proc.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        match = _READY_LINE.search(text)
        if match is None:
            return None
        logged = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")  # local time
        return int(logged.timestamp() * 1000)
