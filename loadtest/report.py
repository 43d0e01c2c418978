"""The final report of a load run: a JSON-ready dict, and its text form."""

from __future__ import annotations

from typing import Any

from loadtest.outcomes import PROBLEM_OUTCOMES, Tally, WorkerResult
from loadtest.plan import LoadConfig, RunSetup


def load_report(
    config: LoadConfig,
    setup: RunSetup,
    results: list[WorkerResult],
    timeline: list[dict[str, Any]],
    label: str,
) -> dict[str, Any]:
    total = Tally()
    for result in results:
        total.merge(result.tally)
    started = min((r.started_at for r in results), default=0.0)
    finished = max((r.finished_at for r in results), default=0.0)
    elapsed = max(finished - started, 1e-9)
    accepted = total.outcomes.get("accepted", 0)
    return {
        "label": label,
        "mode": config.mode,
        "base_url": setup.base_url,
        "run_id": setup.run_id,
        "workers": len(results),
        "in_process": config.workers == 0,
        "connections_per_worker": config.connections,
        "target_rate": config.rate,
        "batch_size": config.batch_size if config.mode == "stream" else 1,
        "bounds": {"duration_s": config.bounds.duration_s, "count": config.bounds.count},
        "mix": {
            "duplicate_ratio": config.mix.duplicate_ratio,
            "invalid_ratio": config.mix.invalid_ratio,
            "late_ratio": config.mix.late_ratio,
        },
        "accounts": len(setup.accounts),
        "meters_per_account": len(setup.accounts[0].meters) if setup.accounts else 0,
        "customers": setup.customers,
        "elapsed_s": round(elapsed, 3),
        "requests": total.requests,
        "events": total.events,
        "requests_per_s": round(total.requests / elapsed, 1),
        "events_per_s": round(total.events / elapsed, 1),
        "accepted_events_per_s": round(accepted / elapsed, 1),
        "outcomes": dict(sorted(total.outcomes.items())),
        "statuses": dict(sorted(total.statuses.items())),
        "problems": {k: total.outcomes[k] for k in PROBLEM_OUTCOMES if total.outcomes.get(k)},
        "latency_ms": total.latency.summary_ms(),
        "unresolved_series": sum(len(r.unresolved) for r in results),
        "samples": [s for r in results for s in r.samples][:10],
        "timeline": timeline,
    }


def format_load_report(report: dict[str, Any]) -> str:
    latency = report["latency_ms"]
    lines = [
        f"{report['label']}: {report['mode']} against {report['base_url']}, "
        f"{report['workers']} worker(s) x {report['connections_per_worker']} connection(s)",
        f"  {report['requests']} requests, {report['events']} events in "
        f"{report['elapsed_s']:.1f} s: {report['requests_per_s']:.0f} req/s, "
        f"{report['events_per_s']:.0f} events/s, "
        f"{report['accepted_events_per_s']:.0f} accepted events/s",
        f"  latency ms: p50 {latency['p50']:.2f}  p95 {latency['p95']:.2f}  "
        f"p99 {latency['p99']:.2f}  max {latency['max']:.2f}",
        "  statuses: " + _pairs(report["statuses"]),
        "  outcomes: " + _pairs(report["outcomes"]),
    ]
    if report["problems"]:
        lines.append("  PROBLEMS: " + _pairs(report["problems"]))
        lines.extend(f"    {sample}" for sample in report["samples"])
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
