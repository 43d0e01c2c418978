"""Topic specs: names, retention and timestamp semantics (no broker needed)."""

from __future__ import annotations

import pytest

from meterflow.kafka.topics import (
    TopicSpec,
    meter_events_rejected_topic,
    meter_events_topic,
    min_insync_replicas,
    topic_specs,
    usage_changes_topic,
    v1_events_topic,
)

_DAY_MS = 24 * 60 * 60 * 1000


def test_names_are_prefixed_and_match_the_name_functions() -> None:
    specs = topic_specs("acme.")
    assert [spec.name for spec in specs] == [
        meter_events_topic("acme."),
        meter_events_rejected_topic("acme."),
        usage_changes_topic("acme."),
        v1_events_topic("acme."),
    ]
    assert all(spec.name.startswith("acme.") for spec in specs)
    assert meter_events_topic("acme.") == "acme.meter-events"


def test_partition_counts() -> None:
    partitions = {spec.name: spec.partitions for spec in topic_specs("")}
    assert partitions == {
        "meter-events": 12,
        "meter-events-rejected": 3,
        "usage-changes": 12,
        "events": 3,
    }


def _spec_id(spec: TopicSpec) -> str:
    return spec.name


@pytest.mark.parametrize("spec", [topic_specs("p.")[0], topic_specs("p.")[1]], ids=_spec_id)
def test_event_retention_outlives_stripes_35_day_backdating_window(spec: TopicSpec) -> None:
    assert int(spec.configs["retention.ms"]) >= 35 * _DAY_MS
    assert spec.configs["cleanup.policy"] == "delete"


def test_derived_topics_keep_what_their_readers_need() -> None:
    retention = {spec.name: int(spec.configs["retention.ms"]) for spec in topic_specs("")}
    # Stripe serves events for 30 days; evaluators may be stopped for days and catch up.
    assert retention["events"] == 30 * _DAY_MS
    assert retention["usage-changes"] >= 3 * _DAY_MS


@pytest.mark.parametrize("spec", topic_specs("p."), ids=_spec_id)
def test_record_timestamps_are_append_time(spec: TopicSpec) -> None:
    assert spec.configs["message.timestamp.type"] == "LogAppendTime"


def test_specs_are_independent_copies() -> None:
    first, second = topic_specs(""), topic_specs("")
    assert first == second
    assert first[0].configs is not second[0].configs


@pytest.mark.parametrize(("replication_factor", "expected"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_replicas(replication_factor: int, expected: int) -> None:
    assert min_insync_replicas(replication_factor) == expected
