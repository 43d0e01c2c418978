"""Fold freshness over a soak, from the aggregators' own histogram.

Every aggregator observes ``meterflow_fold_freshness_seconds`` once per folded record of events:
from ingest's receipt to the commit that makes the events visible in summaries. The soak scrapes
each aggregator's cumulative buckets with every sample; the difference between two samples is
what was folded in between. From those differences come the p99 over the whole run (load and
drain, so every accepted event counts) and the p99 of each window of the run, whose worst is
what "p99 stays within 1 s throughout" is judged by.

A quantile is interpolated inside its bucket as Prometheus's ``histogram_quantile`` does. One that
falls in the ``+Inf`` bucket is known only to exceed the largest finite bound, and is reported
as that bound with ``above`` set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

FRESHNESS_METRIC = "meterflow_fold_freshness_seconds"

# Cumulative bucket counts by upper bound (math.inf for +Inf), in increasing bound order.
Buckets = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Quantile:
    seconds: float
    # True when the quantile is beyond the largest finite bucket bound (``seconds``).
    above: bool = False

    def text(self) -> str:
        return f"> {self.seconds:g} s" if self.above else f"{self.seconds:.2f} s"

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "above": self.above}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Quantile:
        """The quantile :meth:`as_dict` wrote (into ``soak.json``)."""
        return cls(stored["seconds"], above=stored["above"])


def parse_buckets(page: str, metric: str = FRESHNESS_METRIC) -> Buckets:
    """The cumulative buckets of ``metric`` in a Prometheus text page (empty if absent)."""
    buckets: Buckets = []
    for family in text_string_to_metric_families(page):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == f"{metric}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def bucket_delta(before: Buckets | None, after: Buckets, restarted: bool = False) -> Buckets:
    """What was observed between two scrapes of one process. A process that restarted in between
    (another pid, its total went down, or it had no page before) counts from zero."""
    if restarted or not before or len(before) != len(after) or after[-1][1] < before[-1][1]:
        return list(after)
    return [(bound, count - was) for (bound, count), (_, was) in zip(after, before, strict=True)]


def add_buckets(parts: Sequence[Buckets]) -> Buckets:
    """Buckets of several processes (same bounds) added up."""
    present = [p for p in parts if p]
    if not present:
        return []
    return [(bound, sum(p[i][1] for p in present)) for i, (bound, _) in enumerate(present[0])]


def quantile(q: float, buckets: Buckets) -> Quantile | None:
    """The ``q`` quantile of cumulative ``buckets``; None when nothing was observed."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return Quantile(lower_bound, above=True)
            if count == lower_count:
                return Quantile(bound)
            return Quantile(
                lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            )
        lower_bound, lower_count = bound, count
    return Quantile(lower_bound, above=True)


def share_within(limit_s: float, buckets: Buckets) -> float | None:
    """The share of observations at or under ``limit_s`` (a bucket bound), None if none."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    at = [count for bound, count in buckets if bound == limit_s]
    if not at:
        raise ValueError(f"{limit_s} s is not a bucket bound")
    return at[0] / buckets[-1][1]


def freshness_summary(
    samples: Sequence[Mapping[str, Any]], window_s: float = 30.0, limit_s: float = 1.0
) -> dict[str, Any]:
    """From soak samples, each with ``t``, ``freshness`` (aggregator name → cumulative buckets,
    None when it did not answer) and ``pids`` (name → pid, where a process restarted shows):
    the p50 and p99 over the whole run, the worst p99 of any window of about ``window_s``, and
    the share of records folded within ``limit_s``."""
    total: list[Buckets] = []
    windows: list[tuple[float, Buckets]] = []
    last: dict[str, tuple[int | None, Buckets]] = {}
    window_start, window_parts = 0.0, []
    for sample in samples:
        deltas = []
        for name, buckets in (sample.get("freshness") or {}).items():
            if not buckets:
                continue
            pid = (sample.get("pids") or {}).get(name)
            was_pid, was = last.get(name, (pid, None))
            deltas.append(bucket_delta(was, buckets, restarted=was_pid != pid))
            last[name] = pid, buckets
        step = add_buckets(deltas)
        total.append(step)
        window_parts.append(step)
        if sample["t"] - window_start >= window_s:
            windows.append((window_start, add_buckets(window_parts)))
            window_start, window_parts = sample["t"], []
    if any(window_parts):
        windows.append((window_start, add_buckets(window_parts)))
    whole = add_buckets(total)
    per_window = [
        (start, found) for start, b in windows if (found := quantile(0.99, b)) is not None
    ]
    worst = max(per_window, key=lambda w: (w[1].above, w[1].seconds), default=None)
    p99 = quantile(0.99, whole)
    share = share_within(limit_s, whole)
    return {
        "records": whole[-1][1] if whole else 0,
        "p50": None if (p50 := quantile(0.5, whole)) is None else p50.as_dict(),
        "p99": None if p99 is None else p99.as_dict(),
        "worst_window_p99": None if worst is None else worst[1].as_dict() | {"from_s": worst[0]},
        "window_s": window_s,
        "windows_within_limit": sum(
            1 for _, q in per_window if not q.above and q.seconds <= limit_s
        ),
        "windows": len(per_window),
        "limit_s": limit_s,
        "share_within_limit": None if share is None else round(share, 4),
    }
