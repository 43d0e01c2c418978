"""The fold-at-scale targets, each against this run's figure: BENCHMARKS.md's "Scale targets"
section (pure: a suite's phases in, rows out). Targets this suite does not measure say where they
are measured instead."""

from __future__ import annotations

from typing import Any

TargetRow = tuple[str, str, str]  # (target, this run, verdict)

FOLD_RAW_TARGET = 100_000  # events/s, one aggregator process
FOLD_OVERWRITE_TARGET = 120_000  # events/s, overwrite-heavy hour meters
STREAM_TARGET = 100_000  # accepted events/s through meter_event_stream
PRELOAD_TARGET_IDENTIFIERS = 50_000_000
PRELOAD_MIN_RATIO = 0.8  # of the empty database's fold rate
# All stored bytes per accepted event when the target was set (storage phase, 10 M events,
# text dedupe keys and text series keys); the target is half of it.
STORAGE_BYTES_BEFORE = 623.0


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "not met")


def _fold(phases: dict[str, Any], key: str, target: int, copy_rps: float | None) -> TargetRow:
    fold = phases.get(key)
    eps = fold.get("events_per_s") if fold else None
    if eps is None:
        return (f"{target:,} events/s", "not measured in this run", _verdict(None))
    figure = f"{eps:,.0f} events/s"
    if copy_rps:
        figure += f" ({100 * eps / copy_rps:.1f} % of this run's PostgreSQL COPY ceiling)"
    return (f"{target:,} events/s", figure, _verdict(eps >= target))


def _stream(phases: dict[str, Any]) -> TargetRow:
    best: tuple[float, str] | None = None
    for key in ("stream", "stream_ingest"):
        phase = phases.get(key)
        if not phase or not phase.get("available", True) or "load" not in phase:
            continue
        eps = float(phase["load"]["accepted_events_per_s"])
        processes = phase.get("ingest_processes") or 1
        if best is None or eps > best[0]:
            best = (eps, f"{processes} ingest process{'es' if processes > 1 else ''}")
    target = f"{STREAM_TARGET:,} accepted events/s"
    if best is None:
        return (target, "not measured in this run", _verdict(None))
    generator = phases.get("noop_stream", {}).get("load", {}).get("events_per_s")
    figure = f"{best[0]:,.0f} events/s ({best[1]})"
    if generator:
        figure += f"; the generator alone reaches {generator:,.0f}"
    return (target, figure, _verdict(best[0] >= STREAM_TARGET))


def _preload(phases: dict[str, Any]) -> TargetRow:
    target = (
        f"at {PRELOAD_TARGET_IDENTIFIERS:,} preloaded identifiers, at least "
        f"{PRELOAD_MIN_RATIO:.0%} of the empty database's fold rate"
    )
    steps = phases.get("fold_preload", {}).get("steps", [])
    big = [s for s in steps if s["identifiers"] >= PRELOAD_TARGET_IDENTIFIERS]
    if not big or big[-1].get("ratio_to_empty") is None:
        return (target, "not run in this suite (`--preload 0,10000000,50000000`)", _verdict(None))
    step = big[-1]
    ratio = float(step["ratio_to_empty"])
    figure = f"{ratio:.2f} right after the load"
    if (warm := step.get("warm_ratio")) is not None:
        figure += f", {warm:.2f} with hot indexes"
    return (target, figure, _verdict(ratio >= PRELOAD_MIN_RATIO))


def _storage(phases: dict[str, Any]) -> TargetRow:
    target = f"stored bytes per event at most half of {STORAGE_BYTES_BEFORE:,.0f}"
    groups = phases.get("storage", {}).get("groups")
    if not groups:
        return (target, "not measured in this run", _verdict(None))
    total = sum(float(g["bytes_per_event"]) for g in groups.values())
    figure = f"{total:,.1f} bytes per event ({100 * total / STORAGE_BYTES_BEFORE:.0f} % of before)"
    return (target, figure, _verdict(total <= STORAGE_BYTES_BEFORE / 2))


def _kafka(phases: dict[str, Any]) -> TargetRow:
    target = "a Kafka ceiling from kafka-producer-perf-test for meterflow-sized records"
    rows = [phases[k] for k in ("kafka_ceiling_single", "kafka_ceiling_stream") if k in phases]
    if not rows:
        return (target, "not measured in this run", _verdict(None))
    by_tool = all("ProducerPerformance" in str(k.get("tool", "")) for k in rows)
    figure = "; ".join(
        f"{k['records_per_s']:,.0f} records/s of {k['record_bytes']} bytes" for k in rows
    )
    figure += " (kafka-producer-perf-test)" if by_tool else " (not from kafka-producer-perf-test)"
    return (target, figure, _verdict(by_tool))


def target_rows(phases: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, target, this run's figure, met / not met / not measured) per target."""
    copy = phases.get("postgres_copy_ceiling")
    copy_rps = copy["rows_per_s"] if copy else None
    return [
        ("Fold alone, raw meters, one aggregator",
         *_fold(phases, "fold_raw", FOLD_RAW_TARGET, copy_rps)),
        ("Fold alone, overwrite-heavy hour meters, one aggregator",
         *_fold(phases, "fold_overwrite", FOLD_OVERWRITE_TARGET, copy_rps)),
        ("Most accepted through `meter_event_stream`", *_stream(phases)),
        ("Flat cost as stored data grows", *_preload(phases)),
        ("Storage", *_storage(phases)),
        ("Kafka ceiling row", *_kafka(phases)),
        ("Sustained stream",
         "60,000 events/s for 10 minutes; backlog bounded, ending at zero; freshness p99 ≤ 1 s; "
         "totals exact",
         "measured by `make soak` (SOAK.md), not by this suite", _verdict(None)),
    ]  # fmt: skip
