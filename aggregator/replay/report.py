"""What ``meterflow replay rebuild`` prints: counts, rates, then the differences found (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from aggregator.replay.compare import Difference, Totals
from aggregator.replay.rebuild import RebuildReport

_BUCKET_FORMAT = {
    "minute": "%Y-%m-%d %H:%M",
    "hour": "%Y-%m-%d %H:00",
    "day": "%Y-%m-%d",
    "window": "%Y-%m-%d %H:%M",
    "events": "%Y-%m-%d",
}


def _when(difference: Difference) -> str:
    moment = datetime.fromtimestamp(difference.bucket_ts, UTC)
    return moment.strftime(_BUCKET_FORMAT[difference.level])


def _side(totals: Totals | None) -> str:
    if totals is None:
        return "-"
    return f"sum {totals.value_sum}, count {totals.count}"


def difference_line(difference: Difference) -> str:
    mode = "live" if difference.livemode else "test"
    return (
        f"  {difference.meter_id} {difference.customer} ({mode}) {difference.level} "
        f"{_when(difference)}: live {_side(difference.live)}; rebuilt {_side(difference.rebuilt)}"
    )


def summary(report: RebuildReport, *, limit: int) -> Iterator[str]:
    counts = report.counts
    yield (
        f"rebuild: read {counts.records:,} records, folded {counts.events_selected:,} events of "
        f"the scope ({counts.events_new:,} new, the rest repeated identifiers) and "
        f"{counts.cancels:,} cancels in {report.fold_s:.1f} s ({report.events_per_s:,.0f} "
        f"events/s); compared in {report.compare_s:.1f} s; the live fold waited "
        f"{report.hand_over_s:.2f} s for the hand-over"
    )
    levels = Counter(d.level for d in report.differences)
    if not report.differences:
        yield "rebuild: no differences: the live rollups match the topic"
    else:
        customers = len({(d.livemode, d.meter_id, d.customer) for d in report.differences})
        by_level = ", ".join(f"{level} {count:,}" for level, count in sorted(levels.items()))
        yield (
            f"rebuild: {len(report.differences):,} differences ({by_level}) for {customers:,} "
            "(meter, customer) pairs"
        )
        for difference in report.differences[:limit]:
            yield difference_line(difference)
        if len(report.differences) > limit:
            yield f"  ... and {len(report.differences) - limit:,} more (see --report)"
    if report.swapped is not None:
        s = report.swapped
        yield (
            f"rebuild: applied: {s.rows_deleted:,} live rows replaced by {s.rows_inserted:,} "
            f"rebuilt rows, {s.identifiers_restored:,} identifiers restored to the dedupe set, "
            f"{s.usage_changes:,} usage changes recorded for the alert evaluators"
        )


def as_documents(differences: Iterable[Difference]) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per difference, for ``--report FILE`` (JSON Lines)."""
    for d in differences:
        yield {
            "level": d.level,
            "livemode": d.livemode,
            "meter": d.meter_id,
            "customer": d.customer,
            "bucket_ts": d.bucket_ts,
            "live": _document(d.live),
            "rebuilt": _document(d.rebuilt),
        }


def _document(totals: Totals | None) -> dict[str, Any] | None:
    if totals is None:
        return None
    last = None if totals.last_value is None else str(totals.last_value)
    return {"sum": str(totals.value_sum), "count": totals.count, "last": last}
