"""Run the worker: event loop, logging, the faust worker, exit status."""

from __future__ import annotations

import gc

import faust
import uvloop

from tradestats.service.app import build_app
from tradestats.service.logs import logging_config
from tradestats.settings import Settings

__all__ = ["run_worker"]

#: The cyclic garbage collector's thresholds. A fetch hands over tens of thousands of records,
#: each two tracked objects (the record and its headers list), that live until their batch is
#: folded in, and state (pane dicts, aggregates) is made of tracked objects that live for
#: seconds: at Python's default (700 allocations) records were walked several times each and
#: promoted into the oldest generation, whose full collections then ran two dozen times per
#: million trades. Every 500,000 allocations, the collector took 0.04-0.06 s of a million
#: dense trades' 2.6-3 CPU s (0.17-0.2 s at 50,000) and 0.19-0.23 s of 400,000 thin trades'
#: 12 (0.9-1.0 s at 50,000). Its longest pause, 80 ms, is no longer than at 50,000 (145 ms):
#: it walks what is alive, not what was allocated.
_GC_THRESHOLDS = (500_000, 20, 100)


def run_worker(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    uvloop.install()
    gc.set_threshold(*_GC_THRESHOLDS)
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
