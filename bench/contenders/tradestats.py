"""(a) tradestats itself, with default settings: configured by environment variables only."""

from __future__ import annotations

import sys
import time
import urllib.request

from bench.contenders.base import Contender, Emission, RunSpec
from bench.process import ContenderProcess, Launch

__all__ = ["Tradestats"]


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
        """tradestats is not instrumented for the benchmark: its first ``/ready`` 200 stands
        for its first record. Ready means partitions assigned and state restored, and fetching
        starts at once, so this starts its clock a fetch early (never late). Its trade counter
        is no substitute: while a busy worker works through a backlog, its web server answers
        late, which would start the clock late and flatter it."""
        try:
            url = f"http://127.0.0.1:{run.web_port}/ready"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                ready = response.status == 200
        except OSError:
            return None
        return int(time.time() * 1000) if ready else None
