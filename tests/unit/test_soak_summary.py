"""The soak's summaries of its samples: the lag verdict and the cores each process used."""

from typing import Any

from loadtest.bench.soak import cores_used, lag_verdict, slope_per_s
from loadtest.bench.soak_kills import kill_rows


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


def test_a_process_restarted_between_samples_counts_its_cpu_from_zero_again() -> None:
    samples = [
        _sample(0, 0, 0, {"ingest": 10.0}) | {"pids": {"ingest": 1}},
        _sample(10, 0, 0, {"ingest": 15.0}) | {"pids": {"ingest": 1}},
        _sample(20, 0, 0, {"ingest": 2.0}) | {"pids": {"ingest": 2}},  # killed, started again
        _sample(30, 0, 0, {"ingest": 6.0}) | {"pids": {"ingest": 2}},
    ]
    assert cores_used(samples, 0, 30) == {"ingest": round((5 + 2 + 4) / 30, 2)}


def test_each_kill_is_a_row_with_its_times() -> None:
    kills: list[dict[str, Any]] = [
        {
            "process": "ingest 2",
            "pid": 10,
            "new_pid": 11,
            "killed_at_s": 30.1,
            "restarted_at_s": 31.2,
            "ready_at_s": 32.0,
        },
        {
            "process": "aggregator",
            "pid": 20,
            "new_pid": 21,
            "killed_at_s": 30.1,
            "restarted_at_s": 31.1,
            "ready_at_s": None,
        },
    ]
    assert kill_rows(kills) == [
        "| Kill: ingest 2 | SIGKILLed (pid 10) at 30.1 s, started again at 31.2 s (pid 11), "
        "ready at 32.0 s |",
        "| Kill: aggregator | SIGKILLed (pid 20) at 30.1 s, started again at 31.1 s (pid 21), "
        "NOT ready again |",
    ]
    assert kill_rows([]) == ["| Kills | none |"]
