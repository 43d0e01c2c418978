"""Time on meterflow's clock: UTC seconds, minute buckets and pre-aggregation windows.

Windows are epoch-aligned and half-open, ``[start, start + size)``.
"""

from __future__ import annotations

from typing import Literal

MINUTE_S = 60
HOUR_S = 3_600
DAY_S = 86_400

TimeWindow = Literal["hour", "day"]
WINDOW_S: dict[TimeWindow, int] = {"hour": HOUR_S, "day": DAY_S}


def minute_of(ts_s: int) -> int:
    return ts_s - ts_s % MINUTE_S


def day_of(ts_s: int) -> int:
    return ts_s - ts_s % DAY_S


def window_of(ts_s: int, window: TimeWindow) -> int:
    """Start of the UTC hour or day containing ``ts_s``."""
    size = WINDOW_S[window]
    return ts_s - ts_s % size
