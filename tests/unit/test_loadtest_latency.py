"""The generator's latency histogram: bounded buckets, percentiles within 1.6 %."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from loadtest.latency import LatencyHistogram, bucket_bounds, bucket_of


@given(st.integers(0, 10**9))
def test_every_value_lies_within_its_bucket(value: int) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value <= high
    assert high - low <= max(1, low // 64)


def test_buckets_are_ordered_like_the_values() -> None:
    values = list(range(5000)) + [10**k for k in range(4, 10)]
    indexes = [bucket_of(v) for v in values]
    assert indexes == sorted(indexes)


def test_percentiles_match_sorted_samples_closely() -> None:
    rng = random.Random(5)
    samples = [int(rng.lognormvariate(8, 1.2)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    ordered = sorted(samples)
    for percent in (50, 95, 99):
        exact = ordered[-(-len(ordered) * percent // 100) - 1]
        assert abs(histogram.percentile_us(percent) - exact) <= exact * 0.016 + 1
    assert histogram.max_us == ordered[-1]
    assert histogram.count == len(samples)


def test_merged_histograms_equal_one_fed_everything() -> None:
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for n in range(1, 3000):
        whole.record(n * 7)
        (left if n % 2 else right).record(n * 7)
    left.merge(right)
    assert left == whole
    assert left.summary_ms() == whole.summary_ms()


def test_an_empty_histogram_reports_zeros() -> None:
    assert LatencyHistogram().summary_ms() == {
        "p50": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "max": 0.0,
        "mean": 0.0,
    }
