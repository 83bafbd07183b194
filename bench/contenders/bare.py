"""(e) The ceiling: a bare aiokafka consume loop that only decodes each record's JSON."""

from __future__ import annotations

import sys

from bench.contenders.base import Contender, Emission, RunSpec
from bench.process import Launch

__all__ = ["Bare"]


class Bare(Contender):
    key = "e"
    name = "bare-aiokafka"
    title = "bare aiokafka consume + msgspec decode (ceiling)"
    emission = Emission.NONE

    def launch(self, run: RunSpec) -> Launch:
        return Launch(
            [sys.executable, "-m", "bench.contenders.bare_app"],
            env={
                "BENCH_BOOTSTRAP": run.bootstrap,
                "BENCH_GROUP": run.app_id,
                "BENCH_INPUT": run.input_topic,
            },
        )
