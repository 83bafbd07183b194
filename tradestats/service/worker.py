"""Run the worker: event loop, logging, the faust worker, exit status."""

from __future__ import annotations

import faust
import uvloop

from tradestats.service.app import build_app
from tradestats.service.logs import logging_config
from tradestats.settings import Settings

__all__ = ["run_worker"]


def run_worker(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    uvloop.install()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    service = build_app(settings)
    worker = faust.Worker(
        service.app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format),
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception:  # a crash, already logged by the worker with its traceback
        return 1
    return 0
