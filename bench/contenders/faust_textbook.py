"""(b) The textbook faust-streaming version (the baseline); the app is ``faust_app.py``."""

from __future__ import annotations

import sys

from bench.contenders.base import Contender, Emission, RunSpec
from bench.process import Launch

__all__ = ["FaustTextbook"]


class FaustTextbook(Contender):
    key = "b"
    name = "faust-textbook"
    title = "faust-streaming textbook hopping table"
    emission = Emission.UPDATES

    def launch(self, run: RunSpec) -> Launch:
        return Launch(
            [sys.executable, "-m", "bench.contenders.faust_app", "worker", "-l", "warn"],
            env={
                "BENCH_BOOTSTRAP": run.bootstrap,
                "BENCH_APP_ID": run.app_id,
                "BENCH_INPUT": run.input_topic,
                "BENCH_OUTPUT": run.output_topic,
                "BENCH_PARTITIONS": str(run.partitions),
                "BENCH_DATA_DIR": str(run.work_dir / "data"),
                "BENCH_WEB_PORT": str(run.web_port),
            },
        )
