"""Fold freshness over a soak, from scrapes of the aggregators' cumulative histogram."""

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest.bench.soak_freshness import (
    Buckets,
    Quantile,
    bucket_delta,
    freshness_summary,
    parse_buckets,
    quantile,
    share_within,
)
from loadtest.bench.soak_report import freshness_row

BOUNDS = (0.5, 1.0, 2.0, 5.0)


def _buckets(*counts: float) -> Buckets:
    """Cumulative buckets over BOUNDS and +Inf."""
    return list(zip((*BOUNDS, math.inf), counts, strict=True))


def test_the_buckets_come_from_the_metrics_page_the_aggregator_serves() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "meterflow_fold_freshness_seconds", "freshness", buckets=BOUNDS, registry=registry
    )
    for seconds in (0.1, 0.7, 0.8, 3.0, 60.0):
        histogram.observe(seconds)
    page = generate_latest(registry).decode()
    assert parse_buckets(page) == _buckets(1, 3, 3, 4, 5)
    assert parse_buckets(page, "meterflow_other_seconds") == []


def test_the_quantile_interpolates_inside_its_bucket_like_histogram_quantile() -> None:
    # 100 records: 50 within 0.5 s, 50 more within 1 s.
    buckets = _buckets(50, 100, 100, 100, 100)
    assert quantile(0.5, buckets) == Quantile(0.5)
    assert quantile(0.99, buckets) == Quantile(pytest.approx(0.99))  # type: ignore[arg-type]
    assert quantile(0.25, buckets) == Quantile(0.25)


def test_a_quantile_beyond_the_last_bound_is_only_known_to_exceed_it() -> None:
    buckets = _buckets(10, 20, 30, 40, 100)
    found = quantile(0.99, buckets)
    assert found == Quantile(5.0, above=True)
    assert found.text() == "> 5 s"
    assert quantile(0.99, _buckets(0, 0, 0, 0, 0)) is None


def test_the_share_within_a_bound_counts_the_records_at_or_under_it() -> None:
    assert share_within(1.0, _buckets(10, 30, 40, 40, 40)) == 0.75
    with pytest.raises(ValueError, match="not a bucket bound"):
        share_within(1.5, _buckets(10, 30, 40, 40, 40))


def test_a_restarted_aggregator_counts_from_zero_again() -> None:
    before = _buckets(10, 20, 20, 20, 20)
    assert bucket_delta(before, _buckets(15, 30, 30, 30, 30)) == _buckets(5, 10, 10, 10, 10)
    # Killed and started again: its counts went down, so what it shows is all new.
    assert bucket_delta(before, _buckets(3, 4, 4, 4, 4)) == _buckets(3, 4, 4, 4, 4)
    assert bucket_delta(None, _buckets(3, 4, 4, 4, 4)) == _buckets(3, 4, 4, 4, 4)
    # Started again under another pid, and already past its old counts.
    after = _buckets(30, 40, 40, 40, 40)
    assert bucket_delta(before, after, restarted=True) == after


def _sample(t: float, pids: dict[str, int] | None = None, **aggregators: Buckets | None
            ) -> dict[str, Any]:  # fmt: skip
    return {"t": t, "freshness": aggregators, "pids": pids or {"a": 1, "b": 2}}


def test_the_summary_adds_aggregators_and_finds_the_worst_window() -> None:
    samples = [
        _sample(0, a=_buckets(0, 0, 0, 0, 0), b=_buckets(0, 0, 0, 0, 0)),
        # First window: 200 records, all within 0.5 s.
        _sample(30, a=_buckets(100, 100, 100, 100, 100), b=_buckets(100, 100, 100, 100, 100)),
        # Second window: b does not answer (killed); a folds 100 records late (2-5 s).
        _sample(60, a=_buckets(100, 100, 100, 200, 200), b=None),
        # Third window: b is back under another pid, with 100 fast records from zero.
        _sample(
            90,
            {"a": 1, "b": 3},
            a=_buckets(100, 100, 100, 200, 200),
            b=_buckets(100, 100, 100, 100, 100),
        ),
    ]
    summary = freshness_summary(samples, window_s=30.0, limit_s=1.0)
    assert summary["records"] == 400
    assert summary["share_within_limit"] == 0.75
    assert summary["windows"] == 3
    assert summary["windows_within_limit"] == 2
    assert summary["worst_window_p99"] == {"seconds": pytest.approx(4.97), "above": False,
                                           "from_s": 30}  # fmt: skip
    assert summary["p99"]["above"] is False
    assert 2.0 < summary["p99"]["seconds"] <= 5.0


def test_the_row_says_how_many_windows_kept_within_the_limit() -> None:
    samples = [
        _sample(0, a=_buckets(0, 0, 0, 0, 0)),
        _sample(30, a=_buckets(90, 100, 100, 100, 100)),
        _sample(60, a=_buckets(90, 100, 100, 100, 200)),
    ]
    row = freshness_row(freshness_summary(samples, window_s=30.0))
    assert "within 1 s in 1 of 2, worst > 5 s (from 30 s)" in row
    assert "50.0 % of 200 records within 1 s" in row
    assert freshness_row(None).endswith("not measured |")
