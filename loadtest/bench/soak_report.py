"""SOAK.md from a soak's results: the machine, the plan, and one table of what was measured,
with a row per kill."""

from __future__ import annotations

from typing import Any

from loadtest.bench.soak_freshness import Quantile
from loadtest.bench.soak_kills import kill_rows


def _seconds(stored: dict[str, Any] | None) -> str:
    return "n/a" if stored is None else Quantile.from_dict(stored).text()


def freshness_row(fresh: dict[str, Any] | None) -> str:
    """The table row for the aggregators' fold freshness (absent from soaks before it was read)."""
    if not fresh or not fresh.get("records"):
        return "| Fold freshness (receipt → visible in summaries) | not measured |"
    share = fresh["share_within_limit"]
    worst = fresh["worst_window_p99"]
    return (
        "| Fold freshness (receipt → visible in summaries), load and drain | "
        f"p50 {_seconds(fresh['p50'])}, p99 {_seconds(fresh['p99'])}; "
        f"{share * 100:.1f} % of {fresh['records']:,.0f} records within {fresh['limit_s']:g} s; "
        f"p99 per {fresh['window_s']:g} s window within {fresh['limit_s']:g} s in "
        f"{fresh['windows_within_limit']} of {fresh['windows']}, worst {_seconds(worst)}"
        + ("" if worst is None else f" (from {worst['from_s']:.0f} s)")
        + " |"
    )


def soak_markdown(results: dict[str, Any]) -> str:
    soak, machine, plan = results["soak"], results["machine"], results["plan"]
    load, lag, ver = soak["load"], soak["lag"], soak["verification"] or {}
    latency = load["latency_ms"]
    checks = (
        f"lost {ver.get('lost')}, doubled {ver.get('doubled')}, "
        f"{ver.get('matched')}/{ver.get('checks')} summary checks match; series with unanswered "
        f"events: {ver.get('ranged_series', 0)} checked within bounds, "
        f"{ver.get('excluded_series', 0)} left out"
        if ver
        else "not verified"
    )
    drained = "NOT drained" if soak["drain_s"] is None else f"in {soak['drain_s']} s"
    lines = [
        "# Soak",
        "",
        f"Written by `{results['command']}` on {machine['date']} (git {machine['git_rev']}; "
        f"{machine['nproc']} cores, {machine['cpu_model']}, {machine['ram_gib']} GiB; "
        f"1-min loadavg before / after {machine['loadavg_before'][0]} / "
        f"{machine['loadavg_after'][0]}). Everything ran on this machine at once: PostgreSQL, "
        f"Kafka, {plan.get('ingest', 1)} ingest process(es) sharing one port, "
        f"{plan['aggregators']} aggregator process(es), one alert "
        "evaluator and the "
        f"load generator ({load['workers']} processes x {load['connections_per_worker']} "
        "connections). Raw samples: `" + results["results_dir"] + "/soak.json`.",
        "",
        "| Measurement | Result |",
        "|---|---|",
        f"| Target | {plan['rate']:,.0f} events/s through `meter_event_stream`, batches of 100, "
        f"for {plan['duration_s']:.0f} s |",
        f"| Accepted | {load['accepted_events_per_s']:,.0f} events/s "
        f"({load['events']:,} events, {load['requests']:,} requests) |",
        f"| Request latency p50 / p95 / p99 / max | {latency['p50']:.1f} / {latency['p95']:.1f} / "
        f"{latency['p99']:.1f} / {latency['max']:.1f} ms |",
        f"| Aggregator lag | {'bounded' if lag.get('bounded') else 'GROWING'}: at end "
        f"{lag.get('lag_at_end_records', 0):,.0f} records, max "
        f"{lag.get('max_lag_records', 0):,.0f}; second-half trend "
        f"{lag.get('trend_second_half_records_per_min', 0):+,.0f} records/min |",
        f"| Backlog drained after the load | {drained} |",
        freshness_row(soak.get("freshness")),
        f"| End-to-end check | {checks} |",
        f"| Peak RSS | ingest {soak['peak_rss_mib']['ingest']} MiB, aggregator "
        f"{soak['peak_rss_mib']['aggregator']} MiB |",
        f"| Outcomes | {', '.join(f'{k} {v}' for k, v in load['outcomes'].items())} |",
        *kill_rows(soak.get("kills", [])),
        f"| CPU, cores used during the load (of {machine['nproc']}) | "
        + (", ".join(f"{k} {v:.2f}" for k, v in soak.get("cores_used", {}).items()) or "n/a")
        + " |",
        "",
    ]
    return "\n".join(lines)
