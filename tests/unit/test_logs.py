"""Quiet, useful logs: meterflow's own lines, library chatter only at DEBUG, JSON that parses."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaConnectionError

from meterflow.logs import LIBRARY_LOGGERS, LibraryNoise, configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging reconfigured into a buffer, and put back as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    libraries = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    yield io.StringIO()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in libraries.items():
        logging.getLogger(name).setLevel(level)


def _lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_quiet_by_default_library_chatter_hidden(captured: io.StringIO) -> None:
    configure_logging("INFO", "text", process="aggregator", stream=captured)
    logging.getLogger("meterflow.aggregator").info("aggregator folding")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group %r", "g")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://x")
    logging.getLogger("meterflow.aggregator").debug("a detail")
    logging.getLogger("aiokafka").warning("Marking the coordinator dead")
    lines = _lines(captured)
    assert len(lines) == 2
    assert lines[0].endswith("INFO meterflow.aggregator: aggregator folding")
    assert lines[1].endswith("WARNING aiokafka: Marking the coordinator dead")


def test_debug_shows_everything(captured: io.StringIO) -> None:
    configure_logging("debug", "text", process="ingest", stream=captured)
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group %r", "g")
    logging.getLogger("uvicorn.error").info("Waiting for application startup.")
    logging.getLogger("meterflow.ingest").debug("a detail")
    error = GroupCoordinatorNotAvailableError()
    logging.getLogger("aiokafka").error("Group Coordinator Request failed: %s", error)
    assert len(_lines(captured)) == 4


def test_retriable_kafka_errors_count_as_debug(captured: io.StringIO) -> None:
    configure_logging("INFO", "text", process="aggregator", stream=captured)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    assert _lines(captured) == []
    # Not retriable by the client itself: shown.
    logging.getLogger("aiokafka").error("Unable connect to %s: %s", 1, OSError("refused"))
    assert len(_lines(captured)) == 1


def test_a_library_message_shows_at_most_once_a_minute() -> None:
    now = [0.0]
    noise = LibraryNoise(repeat_s=60.0, clock=lambda: now[0])

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    assert noise.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "x"))
    assert not noise.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "y"))
    assert noise.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    assert noise.filter(record("meterflow.ingest", "database unavailable"))
    assert noise.filter(record("meterflow.ingest", "database unavailable"))  # ours: never held
    now[0] = 61.0
    assert noise.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "z"))


def test_json_lines_parse(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", process="alerts", stream=captured)
    log = logging.getLogger("meterflow.alerts")
    log.info("alert evaluator running on %s", "http://127.0.0.1:8082")
    try:
        _publish()
    except KafkaConnectionError:
        log.exception("publishing failed")
    first, second = (orjson.loads(line) for line in _lines(captured)[:1] + _lines(captured)[-1:])
    assert first["message"] == "alert evaluator running on http://127.0.0.1:8082"
    assert first["level"] == "INFO"
    assert first["logger"] == "meterflow.alerts"
    assert first["process"] == "alerts"
    assert first["time"].endswith("Z")
    assert isinstance(first["pid"], int)
    assert second["level"] == "ERROR"
    assert "KafkaConnectionError: gone" in second["exception"]
    # A traceback's lines stay inside one JSON line.
    assert len(_lines(captured)) == 2


def _publish() -> None:
    raise KafkaConnectionError("gone")


def test_an_unknown_level_is_refused(captured: io.StringIO) -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD", "text", process="ingest", stream=captured)
