"""Logging: readable text by default, one JSON object per line with ``LOG_FORMAT=json``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["JsonFormatter", "RepeatFilter", "logging_config"]

#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields (partition, offset)}``."""

    converter = time.gmtime  # type: ignore[assignment]  # typeshed is stricter than logging

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RepeatFilter(logging.Filter):
    """Let the same warning through once per ``seconds``, with a count of what it held back.

    While the broker is away aiokafka logs each failed connection and fetch, ten times a
    second per client; one line every few seconds says the same. Only warnings and errors
    are held back, and only when identical once rendered: informational lines such as
    faust's recovery reports share one format string and must all be seen.
    """

    def __init__(self, seconds: float = 10.0) -> None:
        super().__init__()
        self.seconds = seconds
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        now = time.monotonic()
        last, held = self._seen.get(key, (-self.seconds, 0))
        if now - last < self.seconds:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{message} (and {held} more like it in {now - last:.0f} s)"
            record.args = ()
        self._seen[key] = (now, 0)
        return True


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for the worker."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
                "filters": ["repeats"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # aiokafka is chatty at INFO about every (re)join and fetch position
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }
