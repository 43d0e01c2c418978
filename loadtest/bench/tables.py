"""BENCHMARKS.md from a suite's results (pure: a dict in, markdown text out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtest.bench.sizing import sizing_markdown
from loadtest.bench.targets import target_rows

Row = tuple[str, str, str, str, str]
# The stream measured again with several ingest processes sharing the API port.
STREAM_INGEST_PHASE = "stream_ingest"
_KAFKA_CEILINGS = (
    ("kafka_ceiling_single", "single-event records"),
    ("kafka_ceiling_stream", "stream-shaped records"),
)
MACHINE_HEADER = (
    "nproc", "CPU", "RAM", "kernel", "Python", "date", "git rev", "1-min loadavg before / after",
)  # fmt: skip


def _n(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.0f}{unit}"


def _pct(part: float | None, whole: float | None) -> str:
    if not part or not whole:
        return "n/a"
    return f"{100 * part / whole:.1f} %"


def _latency(load: dict[str, Any]) -> str:
    lat = load["latency_ms"]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms"


def _correctness(phase: dict[str, Any]) -> str:
    v = phase.get("verification")
    if not v:
        return "not verified"
    verdict = "ok" if v["ok"] else "FAILED"
    return (
        f"{verdict}: lost {v['lost']}, doubled {v['doubled']}, "
        f"{v['matched']}/{v['checks']} summary checks match"
    )


def _load_row(
    name: str, phase: dict[str, Any], generator_rps: float | None, kafka_rps: float | None
) -> Row:
    load = phase["load"]
    rps = load["requests_per_s"]
    ceiling = f"generator {_n(generator_rps)} req/s; Kafka {_n(kafka_rps)} records/s"
    ratio = f"{_pct(rps, generator_rps)} of generator; {_pct(rps, kafka_rps)} of Kafka"
    return (name, f"{_n(rps)} req/s<br>{_correctness(phase)}", _latency(load), ceiling, ratio)


def _stream_row(
    phase: dict[str, Any], generator_eps: float | None, kafka: dict[str, Any] | None
) -> Row:
    name = "v2 stream, batch 100 (max rate)"
    if processes := phase.get("ingest_processes"):
        name += f", {processes} ingest processes on one port"
    if not phase.get("available"):
        reason = phase.get("reason") or "the server answers 404"
        return (name, f"not available ({reason})", "-", "-", "-")
    load = phase["load"]
    eps = load["accepted_events_per_s"]
    kafka_eps = None
    if kafka:
        kafka_eps = kafka["records_per_s"] * kafka.get("events_per_record", 1)
    result = f"{_n(eps)} events/s ({_n(load['requests_per_s'])} req/s)<br>{_correctness(phase)}"
    ceiling = (
        f"generator {_n(generator_eps)} events/s; "
        f"Kafka {_n(kafka_eps)} events/s in stream-shaped records"
    )
    ratio = f"{_pct(eps, generator_eps)} of generator; {_pct(eps, kafka_eps)} of Kafka"
    return (name, result, _latency(load), ceiling, ratio)


def _fold_row(
    name: str, fold: dict[str, Any], copy_rps: float | None, one_process: float | None = None
) -> Row:
    if not fold.get("finished"):
        result = f"did not finish: {fold.get('folded_records')}/{fold.get('records')} records"
    else:
        result = (
            f"{_n(fold['events_per_s'])} events/s from process start "
            f"({_n(fold['events_per_s_after_first_fold'])} after the first batch); "
            f"{fold['events']:,} events in {fold['records']:,} records"
        )
    check = fold.get("rollup_event_count") == fold.get("expected_rollup_event_count")
    result += "<br>rollups " + ("match" if check else "DO NOT match") + " the produced events"
    ceiling = f"PostgreSQL COPY {_n(copy_rps)} rows/s"
    ratio = _pct(fold.get("events_per_s"), copy_rps)
    if one_process and fold.get("events_per_s"):
        ceiling = f"one aggregator process: {_n(one_process)} events/s; {ceiling}"
        ratio = f"{fold['events_per_s'] / one_process:.2f}x one process; {ratio} of COPY"
    return (name, result, "-", ceiling, ratio)


_FOLD_WORKLOADS = (
    ("raw", "Aggregator fold, raw meters"),
    ("overwrite", "Aggregator fold, hour meters, overwrite-heavy"),
)


def _fold_rows(phases: dict[str, Any], copy_rps: float | None) -> list[Row]:
    """Per workload: one aggregator process, then more in one consumer group."""
    rows: list[Row] = []
    for workload, name in _FOLD_WORKLOADS:
        single = phases.get(f"fold_{workload}")
        if single:
            rows.append(_fold_row(name, single, copy_rps))
        one_process = single.get("events_per_s") if single else None
        for key in sorted(k for k in phases if k.startswith(f"fold_{workload}_")):
            count = phases[key].get("aggregators")
            rows.append(
                _fold_row(
                    f"{name}, {count} aggregator processes in one group",
                    phases[key],
                    copy_rps,
                    one_process,
                )
            )
    return rows


def _preload_rows(phase: dict[str, Any]) -> list[Row]:
    """The raw fold after each preload step, against the empty database's rate: right after the
    load (cold), and again once the hot indexes were read into memory (warm)."""
    rows: list[Row] = []
    empty = phase.get("empty_events_per_s")
    for step in phase["steps"]:
        name = (
            f"Aggregator fold, raw meters, on {step['identifiers']:,} preloaded identifiers "
            f"(48 h) and {step['raw_events']:,} raw events (35 days)"
            if step["identifiers"]
            else "Aggregator fold, raw meters, in the preload's account before any preload"
        )
        load = step["load"]
        took = (
            f"; this step's preload took {load['seconds']:,.0f} s"
            if load.get("added_identifiers") or load.get("added_raw_events")
            else ""
        )
        rows.append(_preload_row(name + ", right after the load", step["fold"], took,
                                 empty, step.get("ratio_to_empty")))  # fmt: skip
        if warm := step.get("fold_warm"):
            read = f"; read into memory in {step['warm_up']['seconds']:,.0f} s"
            rows.append(_preload_row(name + ", hot indexes in memory", warm, read,
                                     empty, step.get("warm_ratio")))  # fmt: skip
    return rows


def _preload_row(
    name: str, fold: dict[str, Any], extra: str, empty: float | None, ratio: float | None
) -> Row:
    if fold.get("finished"):
        result = (
            f"{_n(fold['events_per_s'])} events/s from process start "
            f"({_n(fold['events_per_s_after_first_fold'])} after the first batch)"
        )
    else:
        result = f"did not finish: {fold.get('folded_records')}/{fold.get('records')} records"
    if io := fold.get("database_per_event"):
        result += (
            f"; per event {io['wal_bytes']:,.0f} B of WAL, {io['wal_fpi']:.2f} full-page "
            f"images, {io['blks_read']:.2f} blocks read from outside shared buffers"
        )
    result += extra
    check = fold.get("rollup_event_count") == fold.get("expected_rollup_event_count")
    result += "<br>rollups " + ("match" if check else "DO NOT match") + " the produced events"
    return (
        name,
        result,
        "-",
        f"empty database: {_n(empty)} events/s",
        "n/a" if ratio is None else f"{100 * ratio:.1f} % of the empty database's rate",
    )


_STORAGE_GROUPS = (
    ("dedupe set", "the dedupe set (event_identifiers)"),
    ("raw events", "raw events (meter_events, all partitions)"),
    ("rollups", "rollups (minute, hour, day, window survivors)"),
    ("transient", "transient rows (usage_changes)"),
)


def _storage_rows(phase: dict[str, Any]) -> list[Row]:
    """Bytes on disk per accepted event, per group of tables, and WAL per event."""
    workload = (
        f"{phase['accepted_events']:,} events accepted, {phase['accounts']} accounts x "
        f"{phase['meters_per_account']} meters x {phase['customers_per_account']} customers, "
        f"{phase['events_per_series_minute']:g} events per series-minute"
    )
    rows: list[Row] = []
    for key, label in _STORAGE_GROUPS:
        group = phase["groups"][key]
        tables = [phase["tables"][t] for t in group["tables"]]
        heap = sum(t["heap_bytes"] for t in tables)
        indexes = sum(sum(t["index_bytes"].values()) for t in tables)
        result = (
            f"{group['bytes_per_event']:,.1f} bytes/event (heap {_n(heap / 2**20)} MiB, "
            f"indexes {_n(indexes / 2**20)} MiB)<br>{workload}"
        )
        if key == "rollups" and (compact := phase.get("rollups_compacted")):
            per_row = ", ".join(
                f"{table.removeprefix('rollups_')} {_n(c['bytes_per_row'])}"
                for table, c in compact.items()
            )
            result += f"<br>bytes per row once rewritten (VACUUM FULL): {per_row}"
        rows.append(
            (
                f"Storage per accepted event: {label}",
                result,
                "-",
                "-",
                "-",
            )
        )
    rows.append(
        (
            "WAL written per accepted event (the fold's transactions)",
            f"{phase['wal_bytes_per_event']:,.1f} bytes/event ({_n(phase['wal_bytes'] / 2**20)} "
            f"MiB); folded at {_n(phase.get('fold_events_per_s'))} events/s",
            "-",
            "-",
            "-",
        )
    )
    return rows


def _kafka_rows(phases: dict[str, Any]) -> list[Row]:
    """Per record size: Kafka's ceiling, then the aiokafka loop measured beside it."""
    rows: list[Row] = []
    for key, label in _KAFKA_CEILINGS:
        if key not in phases:
            continue
        k = phases[key]
        result = f"{_n(k['records_per_s'])} records/s ({k['mb_per_s']} MB/s)"
        if "events_per_record" in k:
            result += f", {_n(k['records_per_s'] * k['events_per_record'])} events/s"
        if k.get("source") == "ProducerPerformance":
            result += "<br>Kafka's ProducerPerformance"
        else:
            result += "<br>aiokafka produce loop (Kafka's ProducerPerformance did not run)"
        lat = k.get("latency_ms")
        latency = (
            f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} ms (max {lat['max']:.0f})"
            if lat
            else "-"
        )
        name = f"Kafka ceiling, {label} ({k['record_bytes']} bytes, acks=all)"
        rows.append((name, result, latency, "-", "-"))
        if loop := k.get("aiokafka"):
            rows.append(
                (
                    f"aiokafka produce loop with ingest's producer settings, {label}",
                    f"{_n(loop['records_per_s'])} records/s ({loop['mb_per_s']} MB/s)",
                    "-",
                    f"Kafka {_n(k['records_per_s'])} records/s",
                    _pct(loop["records_per_s"], k["records_per_s"]),
                )
            )
    return rows


def result_rows(results: dict[str, Any]) -> list[Row]:
    phases = results["phases"]
    generator = phases.get("noop", {}).get("load", {}).get("requests_per_s")
    kafka_single = phases.get("kafka_ceiling_single")
    kafka_rps = kafka_single["records_per_s"] if kafka_single else None
    copy = phases.get("postgres_copy_ceiling")
    copy_rps = copy["rows_per_s"] if copy else None
    rows: list[Row] = []
    if "noop" in phases:
        noop = phases["noop"]["load"]
        result = f"{_n(noop['requests_per_s'])} req/s (v2 single events)"
        if "noop_stream" in phases:
            stream = phases["noop_stream"]["load"]
            result += f"; {_n(stream['events_per_s'])} events/s (stream, batch 100)"
        rows.append(("Generator ceiling (no-op local server)", result, _latency(noop), "-", "-"))
    for key, name in (
        ("v2", "v2 single events (max rate)"),
        ("v1", "v1 events, form-encoded (max rate)"),
    ):
        if key in phases:
            rows.append(_load_row(name, phases[key], generator, kafka_rps))
    if "stream" in phases:
        generator_eps = phases.get("noop_stream", {}).get("load", {}).get("events_per_s")
        for key in ("stream", STREAM_INGEST_PHASE):
            if key in phases:
                kafka = phases.get("kafka_ceiling_stream")
                rows.append(_stream_row(phases[key], generator_eps, kafka))
    rows.extend(_kafka_rows(phases))
    rows.extend(_fold_rows(phases, copy_rps))
    if "fold_preload" in phases:
        rows.extend(_preload_rows(phases["fold_preload"]))
    if "freshness" in phases:
        fresh = phases["freshness"]
        f = fresh["freshness_ms"]
        background = fresh.get("background", {}).get("requests_per_s")
        rows.append(
            (
                "Freshness: 200 → visible in summaries",
                f"{fresh['probes']} probes, {fresh['timeouts']} timeouts, under "
                f"{_n(background)} req/s of v2 background load; polled every "
                f"{fresh['poll_interval_ms']:.0f} ms",
                f"{f['p50']:.0f} / {f['p95']:.0f} / {f['p99']:.0f} ms (max {f['max']:.0f})",
                "-",
                "-",
            )
        )
    if "alerts" in phases:
        rows.append(_alert_row(phases["alerts"]))
    if "credit_alerts" in phases:
        rows.append(_credit_alert_row(phases["credit_alerts"]))
    if "preview" in phases:
        rows.extend(_preview_rows(phases["preview"]))
    rows.extend(_batch_rows(phases))
    return rows


def _batch_rows(phases: dict[str, Any]) -> list[Row]:
    """Work done in bulk rather than per request: closing periods, importing a file."""
    rows: list[Row] = []
    if "closing" in phases:
        rows.append(_closing_row(phases["closing"]))
    if "import" in phases:
        rows.append(_import_row(phases["import"], phases.get("kafka_ceiling_stream")))
    if "storage" in phases:
        rows.extend(_storage_rows(phases["storage"]))
    return rows


def _import_row(phase: dict[str, Any], kafka: dict[str, Any] | None) -> Row:
    kafka_eps = None
    if kafka:
        kafka_eps = kafka["records_per_s"] * kafka.get("events_per_record", 1)
    return (
        "Bulk import: `meterflow import` of a local CSV file",
        f"{_n(phase['events_per_s'])} events/s ({phase['published']:,} of {phase['lines']:,} "
        f"lines, {phase['file_mib']} MiB, checked, published and acknowledged in "
        f"{phase['import_s']:.1f} s); {_n(phase['wall_events_per_s'])} events/s for the whole "
        "command",
        "-",
        f"Kafka {_n(kafka_eps)} events/s in stream-shaped records",
        _pct(phase["events_per_s"], kafka_eps),
    )


def _closing_row(phase: dict[str, Any]) -> Row:
    drafted = phase["all_drafted_after_period_end_s"]
    finalized = phase["all_finalized_after_grace_end_s"]
    return (
        f"Closing {_n(phase['subscriptions'])} subscriptions at one period end",
        f"{_n(phase['finalized'])} finalized, {phase['wrong_amounts']} wrong amounts; every "
        f"draft {'-' if drafted is None else f'{drafted:.1f} s'} after the period's end",
        f"every invoice finalized {'-' if finalized is None else f'{finalized:.1f} s'} after "
        f"the {phase['grace_s']} s grace period's end",
        "-",
        "-",
    )


def _alert_row(phase: dict[str, Any]) -> Row:
    name = "Alert notification: event sent → billing.alert.triggered on the topic"
    if not phase.get("available", True):
        return (name, f"not available ({phase.get('reason')})", "-", "-", "-")
    a = phase["latency_ms"]
    background = phase.get("background", {})
    result = (
        f"{phase['notified']}/{phase['probes']} probes notified, {phase['missing']} missing, "
        f"under {_n(background.get('accepted_events_per_s'))} events/s of stream background "
        f"load (target {_n(background.get('target_rate'))})"
    )
    latency = f"{a['p50']:.0f} / {a['p95']:.0f} / {a['p99']:.0f} ms (max {a['max']:.0f})"
    return (name, result, latency, "-", "-")


def _credit_alert_row(phase: dict[str, Any]) -> Row:
    a = phase["latency_ms"]
    background = phase.get("background", {})
    result = (
        f"{phase['notified']}/{phase['probes']} probes notified, {phase['missing']} missing, "
        f"{phase['fired_before_crossing']} fired early, under "
        f"{_n(background.get('accepted_events_per_s'))} events/s of stream background load "
        f"(target {_n(background.get('target_rate'))})"
    )
    latency = f"{a['p50']:.0f} / {a['p95']:.0f} / {a['p99']:.0f} ms (max {a['max']:.0f})"
    return (
        "Credit balance alert: crossing event accepted → billing.alert.triggered on the topic",
        result,
        latency,
        "-",
        "-",
    )


def _preview_rows(phase: dict[str, Any]) -> list[Row]:
    background = phase.get("background", {})
    load = (
        f"under {_n(background.get('accepted_events_per_s'))} events/s of stream background "
        f"load (target {_n(background.get('target_rate'))})"
    )
    rows: list[Row] = []
    month, day = phase["latency_ms"]["month"], phase["latency_ms"]["day"]
    for name, days in (("month", 27), ("day", 1)):
        a = phase["latency_ms"][name]
        compared = name == "month" and day["p50"] > 0
        rows.append(
            (
                f"Invoice preview, {phase['meters']} metered items, {days}-day period",
                f"{phase['previews'][name]} previews, {_n(phase['events_per_meter'][name])} "
                f"events per meter in the period, {load}",
                f"{a['p50']:.1f} / {a['p95']:.1f} / {a['p99']:.1f} ms (max {a['max']:.1f})",
                f"1-day period: p50 {day['p50']:.1f} ms" if compared else "-",
                f"{month['p50'] / day['p50']:.1f}x the 1-day cost" if compared else "-",
            )
        )
    if "credit_summary_latency_ms" in phase:
        c = phase["credit_summary_latency_ms"]
        rows.append(
            (
                f"Credit balance summary, live over {phase['meters']} metered items, 27-day period",
                f"{phase['credit_summaries']} summaries, {load}",
                f"{c['p50']:.1f} / {c['p95']:.1f} / {c['p99']:.1f} ms (max {c['max']:.1f})",
                "-",
                "-",
            )
        )
    f = phase["freshness_ms"]
    rows.append(
        (
            "Preview freshness: event sent → included in the preview",
            f"{phase['probes']} probes, {phase['missing']} missing, polled every 20 ms, {load}",
            f"{f['p50']:.0f} / {f['p95']:.0f} / {f['p99']:.0f} ms (max {f['max']:.0f})",
            "-",
            "-",
        )
    )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _kafka_note(label: str, k: dict[str, Any]) -> str:
    note = (
        f"- Kafka, {label}: {_n(k['records_per_s'])} records/s of {k['record_bytes']} bytes "
        f"({k['mb_per_s']} MB/s) with acks=all"
    )
    if lat := k.get("latency_ms"):
        note += (
            f", latency avg {lat['avg']:.1f} / p50 {lat['p50']:.0f} / p99 {lat['p99']:.0f} / "
            f"p99.9 {lat['p99_9']:.0f} / max {lat['max']:.0f} ms"
        )
    if "seconds" in k:
        note += f" ({k['records']:,} records in {k['seconds']:.1f} s)"
    note += f"; {k['tool']}."
    if loop := k.get("aiokafka"):
        note += (
            f" Beside it, an {loop['tool']}: {_n(loop['records_per_s'])} records/s "
            f"({loop['mb_per_s']} MB/s), {_pct(loop['records_per_s'], k['records_per_s'])} of it."
        )
    if error := k.get("producer_performance_error"):
        reason = " ".join(str(error).split())  # one list item: no line breaks from Java's output
        note += f" Kafka's ProducerPerformance did not run: {reason[:300]}."
    return note


def _ceiling_notes(phases: dict[str, Any]) -> list[str]:
    notes = [_kafka_note(label, phases[key]) for key, label in _KAFKA_CEILINGS if key in phases]
    if "postgres_copy_ceiling" in phases:
        c = phases["postgres_copy_ceiling"]
        notes.append(f"- PostgreSQL: {_n(c['rows_per_s'])} rows/s; {c['tool']}.")
    return notes


def _sizing_section(phases: dict[str, Any]) -> list[str]:
    sized = phases.get("storage", {}).get("sizing")
    if not sized:
        return []
    return [
        "## Sizing",
        "",
        "Disk and memory estimated from the storage phase's bytes per event "
        "(loadtest/bench/sizing.py):",
        "",
        sizing_markdown(sized).rstrip(),
        "",
    ]


def benchmarks_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    machine_rows = [
        (
            str(m["nproc"]),
            str(m["cpu_model"]),
            f"{m['ram_gib']} GiB",
            str(m["kernel"]),
            str(m["python"]),
            str(m["date"]),
            str(m["git_rev"]),
            " / ".join(f"{x:.2f}" for x in (m["loadavg_before"][0], m["loadavg_after"][0])),
        )
    ]
    rss = results.get("peak_rss_mib", {})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results['command']}` (`{results['argv']}`), which starts its own stack "
        "(PostgreSQL, Kafka, one ingest process, one aggregator, one alert evaluator) on free "
        "loopback ports, runs "
        f"the fixed suite in {results['duration_s']:.0f} s, and keeps the raw figures in "
        f"`{results['results_dir']}/results.json` with a plot beside it. "
        f"{results['notes']}",
        "",
        "## Machine",
        "",
        *_table(MACHINE_HEADER, machine_rows),
        "",
        "## Results",
        "",
        *_table(
            ("Measurement", "Result", "Latency p50 / p95 / p99", "Ceiling (same run)", "Ratio"),
            list(result_rows(results)),
        ),
        "",
        "Ceilings:",
        "",
        *_ceiling_notes(results["phases"]),
        "",
        "## Scale targets",
        "",
        "The fold-at-scale targets against this run (figures from the table above):",
        "",
        *_table(("What", "Target", "This run", "Verdict"), target_rows(results["phases"])),
        "",
        *_sizing_section(results["phases"]),
        "## Peak memory (VmHWM)",
        "",
        *_table(
            tuple(rss),
            [tuple(_n(v, " MiB") for v in rss.values())],
        ),
        "",
        results.get("rss_note", ""),
        "",
    ]
    return "\n".join(lines).rstrip() + "\n"
