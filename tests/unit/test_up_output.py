"""What `meterflow up` shows: the progress line from the children's metrics, the children's
quiet logging."""

from __future__ import annotations

from deploy.up_output import ProgressReporter, Reading, child_log_env, progress_line, take_reading
from meterflow.settings import Settings

INGEST = """\
# TYPE meterflow_meter_event_requests_total counter
meterflow_meter_event_requests_total{endpoint="v1",outcome="accepted"} 100.0
meterflow_meter_event_requests_total{endpoint="v1",outcome="invalid"} 7.0
meterflow_meter_event_requests_total{endpoint="v2",outcome="accepted"} 50.0
# TYPE meterflow_stream_events_total counter
meterflow_stream_events_total{outcome="accepted"} 1000.0
meterflow_stream_events_total{outcome="no_meter"} 3.0
"""
AGGREGATOR = """\
# TYPE meterflow_fold_events_total counter
meterflow_fold_events_total{outcome="new"} 1100.0
meterflow_fold_events_total{outcome="duplicate"} 10.0
# TYPE meterflow_consumer_lag_records gauge
meterflow_consumer_lag_records{group="g",partition="0",topic="t"} 30.0
meterflow_consumer_lag_records{group="g",partition="1",topic="t"} 12.0
# TYPE meterflow_consumer_lag_seconds gauge
meterflow_consumer_lag_seconds{group="g",partition="0",topic="t"} 0.4
meterflow_consumer_lag_seconds{group="g",partition="1",topic="t"} 1.5
"""
ALERTS = """\
# TYPE meterflow_consumer_lag_records gauge
meterflow_consumer_lag_records{group="a",partition="0",topic="u"} 3.0
# TYPE meterflow_consumer_lag_seconds gauge
meterflow_consumer_lag_seconds{group="a",partition="0",topic="u"} 0.2
"""
IDLE = Reading(at_s=0.0, accepted=0.0, read=0.0, lag_records=0.0, lag_seconds=0.0)


def test_a_reading_adds_up_accepted_and_read_events_and_lag() -> None:
    reading = take_reading({"ingest": INGEST, "aggregator": AGGREGATOR, "alerts": ALERTS}, 5.0)
    assert reading == Reading(
        at_s=5.0, accepted=1150.0, read=1110.0, lag_records=45.0, lag_seconds=1.5
    )


def test_several_ingest_processes_add_up_and_one_that_does_not_answer_leaves_it_unknown() -> None:
    pages: dict[str, str | None] = {"ingest 1": INGEST, "ingest 2": INGEST, "aggregator": None}
    assert take_reading(pages, 1.0).accepted == 2300.0
    assert take_reading(pages | {"ingest 2": None}, 1.0).accepted is None


def test_a_child_that_does_not_answer_leaves_its_part_unknown() -> None:
    reading = take_reading({"ingest": None, "aggregator": AGGREGATOR, "alerts": None}, 1.0)
    assert (reading.accepted, reading.read, reading.lag_records) == (None, 1110.0, None)
    line, _ = progress_line(IDLE, reading)
    assert line == "? events/s accepted, 1,110/s folded; lag ?"


def test_the_line_gives_rates_between_readings() -> None:
    now = Reading(at_s=10.0, accepted=12_345.0, read=12_000.0, lag_records=345.0, lag_seconds=0.7)
    assert progress_line(IDLE, now) == (
        "1,234 events/s accepted, 1,200/s folded; lag 345 records (0.7s)",
        True,
    )
    assert progress_line(IDLE, Reading(10.0, 0.0, 0.0, 0.0, 0.0))[1] is False


def test_the_reporter_speaks_during_activity_once_after_and_never_while_idle() -> None:
    said: list[str] = []
    reporter = ProgressReporter({}, 1.0, said.append)
    readings = [
        Reading(0.0, 0.0, 0.0, 0.0, 0.0),
        Reading(1.0, 0.0, 0.0, 0.0, 0.0),  # idle: nothing
        Reading(2.0, 500.0, 400.0, 100.0, 0.5),  # traffic
        Reading(3.0, 500.0, 500.0, 0.0, 0.0),  # catching up
        Reading(4.0, 500.0, 500.0, 0.0, 0.0),  # idle: said once
        Reading(5.0, 500.0, 500.0, 0.0, 0.0),  # still idle: nothing
    ]
    for reading in readings:
        reporter.report(reading)
    assert said == [
        "500 events/s accepted, 400/s folded; lag 100 records (0.5s)",
        "0 events/s accepted, 100/s folded; lag 0 records (0.0s)",
        "0 events/s accepted, 0/s folded; lag 0 records (0.0s)",
    ]


def test_children_log_warnings_in_ups_format_or_everything_at_debug() -> None:
    assert child_log_env(Settings()) == {
        "METERFLOW_LOG_FORMAT": "text",
        "METERFLOW_LOG_LEVEL": "WARNING",
    }
    debug = Settings(log_level="debug", log_format="json")
    assert child_log_env(debug) == {"METERFLOW_LOG_FORMAT": "json", "METERFLOW_LOG_LEVEL": "DEBUG"}
