"""The scanner that finds metric names (and the label names they match on) in our PromQL."""

from __future__ import annotations

import pytest

from tests.fixtures.promql import Selector, selectors


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", [Selector("up", ())]),
        (
            'sum by (status) (rate(meterflow_http_requests_total{status=~"4.."}[5m]))',
            [Selector("meterflow_http_requests_total", ("status",))],
        ),
        (
            "histogram_quantile(0.99, sum by (le, route) "
            "(rate(meterflow_http_request_duration_seconds_bucket[$__rate_interval])))",
            [Selector("meterflow_http_request_duration_seconds_bucket", ())],
        ),
        (
            'a{x="}{,\\"", y!~\'z\'} unless on (x) b offset 5m > 0.5e-3 and bool c',
            [Selector("a", ("x", "y")), Selector("b", ()), Selector("c", ())],
        ),
        (
            "meterflow:consumer_lag_seconds:max > 60 and deriv(x:y:z[10m]) > 0",
            [Selector("meterflow:consumer_lag_seconds:max", ()), Selector("x:y:z", ())],
        ),
        ("time() - max(last_done)", [Selector("last_done", ())]),
        (
            '(sum(rate(a{o="x"}[5m])) or vector(0)) + sum without (p) (b)',
            [Selector("a", ("o",)), Selector("b", ())],
        ),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', [Selector("a", ())]),
        ("max_over_time(up[2m:30s]) == Inf", [Selector("up", ())]),
    ],
)
def test_selectors(expr: str, expected: list[Selector]) -> None:
    assert selectors(expr) == expected


def test_a_selector_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="without a metric name"):
        selectors('{__name__="up"}')
