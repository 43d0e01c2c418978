"""Latency percentiles in bounded memory: an HDR-style log-linear histogram of microseconds.

Values below 128 µs are exact; above, each power of two is split into 64 buckets, so a reported
percentile is within 1.6 % of the true sample. Histograms merge by adding counts, which is how
worker processes and per-second windows combine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SUB_BITS = 6
_SUB = 1 << _SUB_BITS  # buckets per power of two
_EXACT = 2 * _SUB  # values below this have a bucket of their own


def bucket_of(value_us: int) -> int:
    """The bucket index of a non-negative value; monotonic in the value."""
    if value_us < _EXACT:
        return max(0, value_us)
    shift = value_us.bit_length() - (_SUB_BITS + 1)
    return shift * _SUB + (value_us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value of a bucket."""
    if index < _EXACT:
        return index, index
    shift = index // _SUB - 1
    low = (index - shift * _SUB) << shift
    return low, low + (1 << shift) - 1


@dataclass(slots=True)
class LatencyHistogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_us: int = 0
    max_us: int = 0

    def record(self, value_us: int) -> None:
        index = bucket_of(value_us)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total_us += value_us
        self.max_us = max(self.max_us, value_us)

    def record_s(self, seconds: float) -> None:
        self.record(int(seconds * 1_000_000))

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile_us(self, percent: float) -> int:
        """The value at or below which ``percent`` of the samples lie (0 when empty)."""
        if self.count == 0:
            return 0
        rank = max(1, -(-self.count * percent // 100))  # ceil, at least the first sample
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                return min((low + high) // 2, self.max_us)
        return self.max_us

    def summary_ms(self) -> dict[str, float]:
        """p50/p95/p99/max and mean in milliseconds, rounded for reports."""
        mean = self.total_us / self.count if self.count else 0.0
        return {
            "p50": _ms(self.percentile_us(50)),
            "p95": _ms(self.percentile_us(95)),
            "p99": _ms(self.percentile_us(99)),
            "max": _ms(self.max_us),
            "mean": _ms(mean),
        }


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 3)
