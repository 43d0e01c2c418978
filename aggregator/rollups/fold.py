"""Pure fold logic: the events of a batch as rows, and the election of pre-aggregated windows'
survivors by receipt order.

Nothing here does I/O; :mod:`aggregator.rollups.store` applies the results in one transaction.
Runs of many events are folded in column form instead (:mod:`aggregator.rollups.columns`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from meterflow.receipt import Receipt
from meterflow.windows import TimeWindow, window_of


@dataclass(frozen=True, slots=True)
class EventRow:
    """One accepted event, flattened, with its receipt position."""

    account_id: str
    livemode: bool
    meter_id: str
    customer: str
    identifier: str
    value: Decimal
    event_ts: int
    received_ms: int
    receipt_batch: str
    receipt_index: int

    @property
    def receipt(self) -> Receipt:
        return (self.received_ms, self.receipt_batch, self.receipt_index)


# (account, livemode, meter, customer, window start): one pre-aggregation window.
WindowKey = tuple[str, bool, str, str, int]


def window_key(row: EventRow, window: TimeWindow) -> WindowKey:
    return (
        row.account_id,
        row.livemode,
        row.meter_id,
        row.customer,
        window_of(row.event_ts, window),
    )


def keyed_by_window(
    rows: Iterable[EventRow], windows: Mapping[str, TimeWindow | None]
) -> list[tuple[WindowKey, EventRow]]:
    """Each event of a pre-aggregated (hour/day) meter with its window; others are left out."""
    keyed: list[tuple[WindowKey, EventRow]] = []
    for row in rows:
        window = windows.get(row.meter_id)
        if window is not None:
            keyed.append((window_key(row, window), row))
    return keyed


def latest_per_window(rows: Iterable[tuple[WindowKey, EventRow]]) -> dict[WindowKey, EventRow]:
    """The most recently received event of each window among ``rows``."""
    latest: dict[WindowKey, EventRow] = {}
    for key, row in rows:
        held = latest.get(key)
        if held is None or row.receipt > held.receipt:
            latest[key] = row
    return latest


@dataclass(frozen=True, slots=True)
class Overwrite:
    """A window whose surviving event changes: ``replaced`` is the previous survivor, if any."""

    key: WindowKey
    survivor: EventRow
    replaced: EventRow | None


def overwrites(
    candidates: Mapping[WindowKey, EventRow], stored: Mapping[WindowKey, EventRow]
) -> list[Overwrite]:
    """Windows where a candidate was received after the stored survivor (or none is stored).

    A candidate received before the stored survivor is a late arrival of an older event: it is
    kept as a raw event (a cancel of the survivor may bring it back) but changes nothing now.
    """
    changes: list[Overwrite] = []
    for key, candidate in candidates.items():
        held = stored.get(key)
        if held is None or candidate.receipt > held.receipt:
            changes.append(Overwrite(key, candidate, held))
    return changes
