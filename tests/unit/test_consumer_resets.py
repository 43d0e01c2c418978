"""A consumer group reset moves partitions back in time only, and only for groups whose records
can be read twice harmlessly, within how far back that holds."""

from __future__ import annotations

import pytest

from meterflow.kafka.resets import ResetPolicy, ResetRefused, check_reset, plan_reset

NOW_MS = 1_796_400_000_000
HOUR_MS = 3_600_000


def test_a_reset_moves_back_never_forward_and_leaves_untouched_partitions_alone() -> None:
    stored = {0: 100, 1: 50, 2: 70}
    at_time = {0: 80, 1: 60, 2: 70, 3: 5}
    assert plan_reset(stored, at_time) == {0: 80}


def test_the_rollup_group_resets_within_its_dedupe_horizon_only() -> None:
    policy = ResetPolicy("meterflow-aggregator", max_age_s=24 * 3600)
    check_reset(policy, NOW_MS - 23 * HOUR_MS, NOW_MS)
    with pytest.raises(ResetRefused, match="at most 24 hours back"):
        check_reset(policy, NOW_MS - 25 * HOUR_MS, NOW_MS)


def test_a_group_whose_reads_add_up_is_never_reset() -> None:
    policy = ResetPolicy("g-error-reports", max_age_s=None, refused="it adds rejections up")
    with pytest.raises(ResetRefused, match="cannot be reset: it adds rejections up"):
        check_reset(policy, NOW_MS, NOW_MS)


def test_a_group_without_a_horizon_resets_as_far_as_the_topic_holds() -> None:
    check_reset(ResetPolicy("meterflow-alerts", max_age_s=None), 0, NOW_MS)
