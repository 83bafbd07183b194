"""(c) Quix Streams, the closest Python peer; the app is ``quix_app.py``.

Quix Streams 3.28 requires ``pydantic<2.14``, and the project pins pydantic 2.14, so it
cannot join the project's environment: it gets a virtual environment of its own, created once
under the cache directory with exactly the pinned version (or ``--quix-python`` names an
interpreter that already has it).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.contenders.base import REPO_ROOT, Contender, Emission, RunSpec
from bench.process import Launch

__all__ = ["QUIXSTREAMS_VERSION", "Quix"]

QUIXSTREAMS_VERSION = "3.28.1"


class Quix(Contender):
    key = "c"
    name = "quixstreams"
    title = f"Quix Streams {QUIXSTREAMS_VERSION} hopping_window().final()"
    emission = Emission.FINAL

    def __init__(self, python: Path | None = None) -> None:
        self.python = python

    def prepare(self, cache_dir: Path, say: Callable[[str], None]) -> None:
        if self.python is not None:
            return
        venv = cache_dir / f"venv-quixstreams-{QUIXSTREAMS_VERSION}"
        python = venv / "bin" / "python"
        marker = venv / ".installed"
        if not marker.exists():
            say(f"creating {venv} with quixstreams=={QUIXSTREAMS_VERSION} (first run only)")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIXSTREAMS_VERSION}"],
                check=True,
            )
            marker.touch()
        self.python = python

    def launch(self, run: RunSpec) -> Launch:
        assert self.python is not None, "prepare() first"
        return Launch(
            [str(self.python), "-m", "bench.contenders.quix_app"],
            env={
                "BENCH_BOOTSTRAP": run.bootstrap,
                "BENCH_GROUP": run.app_id,
                "BENCH_INPUT": run.input_topic,
                "BENCH_OUTPUT": run.output_topic,
                "BENCH_DATA_DIR": str(run.work_dir / "state"),
                "PYTHONPATH": str(REPO_ROOT),
            },
            cwd=REPO_ROOT,
        )

    def is_changelog(self, topic: str, run: RunSpec) -> bool:
        return topic.startswith(f"changelog__{run.app_id}--")
