"""The soak's summaries of its samples: the lag verdict and the cores each process used."""

from typing import Any

from loadtest.bench.soak import cores_used, lag_verdict, slope_per_s


def _sample(t: float, lag: float, produced: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {"t": t, "lag": lag, "produced": produced, "ingest_rss_mib": 50.0, "cpu": cpu}


def test_slope_is_the_least_squares_fit() -> None:
    assert slope_per_s([(0, 1), (1, 3), (2, 5)]) == 2
    assert slope_per_s([(5, 7)]) == 0


def test_a_backlog_that_keeps_growing_is_not_bounded() -> None:
    growing = [_sample(t, 1000 * t, 6000 * t, {}) for t in range(0, 101, 2)]
    verdict = lag_verdict(growing, 100)
    assert verdict["bounded"] is False
    assert verdict["trend_second_half_records_per_min"] == 60_000


def test_a_backlog_that_comes_and_goes_is_bounded() -> None:
    wobbling = [_sample(t, 500 if t % 4 else 3000, 6000 * t, {}) for t in range(0, 101, 2)]
    assert lag_verdict(wobbling, 100)["bounded"] is True


def test_cores_are_cpu_seconds_over_the_window_and_skip_processes_gone_early() -> None:
    samples = [
        _sample(0, 0, 0, {"ingest": 0.0, "generator": 0.0}),
        _sample(10, 0, 0, {"ingest": 1.0, "generator": 2.0}),
        _sample(20, 0, 0, {"ingest": 6.0, "generator": 4.5}),
        _sample(30, 0, 0, {"ingest": 9.0}),
    ]
    assert cores_used(samples, 10, 20) == {"ingest": 0.5, "generator": 0.25}
    assert cores_used(samples, 10, 30) == {"ingest": 0.4}
    assert cores_used(samples, 25, 30) == {}
