"""How every meterflow process writes its log: one handler on stderr, text or JSON lines.

Quiet by default, so that what is left matters:

* meterflow's own records from the configured level (``METERFLOW_LOG_LEVEL``, INFO: components
  starting and stopping, warnings, errors);
* libraries (aiokafka, uvicorn) only from WARNING; their INFO chatter (joining groups, "Uvicorn
  running on") is DEBUG;
* aiokafka's errors about conditions its client retries on its own (``retriable`` Kafka errors,
  such as a group coordinator not elected yet) count as DEBUG too;
* one library message (the same logger and format string) at most once a minute, so an outage
  gives a line, not a flood.

At DEBUG everything passes. ``json`` writes one object per line, for log collectors.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import orjson

from meterflow.settings.roles import LogFormat

# Loggers whose INFO is chatter; their warnings and errors still show.
LIBRARY_LOGGERS = ("aiokafka", "kafka", "uvicorn")
LIBRARY_REPEAT_S = 60.0
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _is_library(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in LIBRARY_LOGGERS


def _retriable(record: logging.LogRecord) -> bool:
    """Whether the record reports a Kafka error its client retries by itself."""
    args = record.args if isinstance(record.args, tuple) else ()
    errors = [arg for arg in args if isinstance(arg, BaseException)]
    if record.exc_info and record.exc_info[1] is not None:
        errors.append(record.exc_info[1])
    return any(getattr(error, "retriable", False) is True for error in errors)


class LibraryNoise(logging.Filter):
    """Drops the library records that quiet logs leave out (see the module docstring)."""

    def __init__(
        self, *, repeat_s: float = LIBRARY_REPEAT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._repeat_s = repeat_s
        self._clock = clock
        self._last_shown: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_library(record):
            return True
        if _retriable(record):
            return False
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last_shown.get(key)
            if last is not None and now - last < self._repeat_s:
                return False
            self._last_shown[key] = now
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``message``,
    ``process`` (the meterflow command), ``pid``, and ``exception`` when there is one."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self._process,
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line).decode()


def configure_logging(
    level: str, log_format: LogFormat, *, process: str, stream: TextIO | None = None
) -> None:
    """Send every record to ``stream`` (stderr) in ``log_format``, quiet as described above.

    Replaces whatever handlers the root logger had; call once, first thing in ``main()``.
    """
    threshold = logging.getLevelNamesMapping().get(level.upper())
    if threshold is None:
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    debug = threshold <= logging.DEBUG
    if not debug:
        handler.addFilter(LibraryNoise())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(logging.DEBUG if debug else max(threshold, logging.WARNING))
        library.propagate = True
    # Their children (uvicorn.error, aiokafka.consumer...) follow them, whatever a library set
    # on them before (uvicorn's own logging setup gives uvicorn.error a level and handlers).
    for name, child in list(logging.root.manager.loggerDict.items()):
        library_child = "." in name and name.split(".")[0] in LIBRARY_LOGGERS
        if library_child and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
            for old in child.handlers[:]:
                child.removeHandler(old)
            child.propagate = True
