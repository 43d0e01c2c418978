"""meterflow's four Grafana dashboards: Overview, Pipeline, Alerts and webhooks, Billing.

The JSON in ``deploy/grafana/generated/`` is what this module writes; it is committed so Grafana
can provision it with no Python around, and a test fails when it is not what this writes:

    python -m deploy.grafana.dashboards          # rewrite the JSON
    python -m deploy.grafana.dashboards --check  # exit 1, naming the files, if it is stale

Counters and gauges each process reports about the whole database (the webhook backlog) are taken
with ``max`` across processes; everything else is summed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard

from deploy.grafana.panels import (
    Query,
    chart,
    dashboard,
    heatmap_of,
    increase,
    p50_p99,
    quantile,
    rate,
    render,
)

GENERATED = Path(__file__).resolve().parent / "generated"

_EVENTS = "meterflow_meter_event_requests_total"


def overview() -> Dashboard:
    traffic = [
        chart(
            "Meter events by endpoint and outcome",
            "Meter event and adjustment requests by outcome (accepted, invalid, duplicate, "
            "unavailable), and events sent through meter_event_stream by outcome.",
            "reqps",
            Query(rate(_EVENTS, "endpoint, outcome"), "{{endpoint}} {{outcome}}"),
            Query(rate("meterflow_stream_events_total", "outcome"), "stream events {{outcome}}"),
        ),
        chart(
            "HTTP 4xx and 5xx",
            "Client errors by status; server errors by status and route. A 503 with Kafka "
            "down or the database away is expected to stop once it is back; a 500 is a bug.",
            "reqps",
            Query(rate("meterflow_http_requests_total", "status", 'status=~"4.."'), "{{status}}"),
            Query(
                rate("meterflow_http_requests_total", "status, route", 'status=~"5.."'),
                "{{status}} {{route}}",
            ),
        ),
        chart(
            "Request latency",
            "Time from receiving a request to sending its response, every route.",
            "s",
            *p50_p99("meterflow_http_request_duration_seconds"),
        ),
        chart(
            "Slowest routes (p99)",
            "The 99th percentile of request latency, by route template.",
            "s",
            Query(quantile(0.99, "meterflow_http_request_duration_seconds", "route"), "{{route}}"),
        ),
        chart(
            "Rate-limited requests (429)",
            "Requests answered 429 by route, and by endpoint class and reason: an account over "
            "its limit, or an address blocked after failed authentications.",
            "reqps",
            Query(rate("meterflow_http_requests_total", "route", 'status="429"'), "{{route}}"),
            Query(
                rate("meterflow_rate_limited_total", "endpoint_class, reason"),
                "{{endpoint_class}} ({{reason}})",
            ),
        ),
        chart(
            "Requests in flight, connections and database pool",
            "Requests being handled, open HTTP connections, and each process's pooled database "
            "connections by state.",
            "short",
            Query("sum(meterflow_http_requests_in_flight)", "requests in flight"),
            Query("sum(meterflow_http_connections)", "open connections"),
            Query("sum by (state) (meterflow_db_pool_connections)", "pool {{state}}"),
        ),
        chart(
            "Refused by the HTTP edge",
            "Requests and connections refused before reaching the application (limits on the "
            "request head, head and body deadlines, the connection limit, unparsable requests).",
            "reqps",
            Query(rate("meterflow_http_refusals_total", "reason"), "{{reason}}"),
        ),
    ]
    kafka = [
        chart(
            "Kafka acknowledgement latency",
            "From enqueueing a request's records to Kafka acknowledging all of them "
            "(acks=all): the floor of every event request's latency.",
            "s",
            *p50_p99("meterflow_kafka_publish_duration_seconds", "ack"),
        ),
        chart(
            "Kafka publishing",
            "Records Kafka acknowledged; publish calls answered 503, by reason; producers "
            "connected (of the ingest processes).",
            "short",
            Query(rate("meterflow_kafka_records_published_total"), "records acknowledged/s"),
            Query(
                rate("meterflow_kafka_publish_failures_total", "reason"), "failures/s {{reason}}"
            ),
            Query("sum(meterflow_kafka_producer_connected)", "producers connected"),
        ),
    ]
    health = [
        chart(
            "Components ready",
            "1 while a component of some process is started and working (the lowest across "
            "processes).",
            "short",
            Query("min by (component) (meterflow_component_ready)", "{{component}}"),
        ),
        chart(
            "Database outages",
            "Passes that failed because PostgreSQL was unreachable, and passes that succeeded "
            "again after it, by component.",
            "short",
            Query(
                increase("meterflow_database_outage_errors_total", "component"),
                "errors {{component}}",
            ),
            Query(
                increase("meterflow_database_reconnects_total", "component"),
                "reconnects {{component}}",
            ),
        ),
    ]
    return dashboard(
        "meterflow-overview",
        "meterflow / Overview",
        "The API as clients see it: events accepted, errors, latency, Kafka acknowledgements, "
        "rate limiting.",
        {"Traffic": traffic, "Kafka": kafka, "Health": health},
    )


def pipeline() -> Dashboard:
    lag = [
        chart(
            "Consumer lag (records)",
            "Records between each consumer group's next offset to fold and the partitions' "
            "high watermarks, summed over partitions.",
            "short",
            Query("sum by (group) (meterflow_consumer_lag_records)", "{{group}}"),
        ),
        chart(
            "Consumer lag (seconds)",
            "Age of the oldest record each consumer group has not folded yet (its slowest "
            "partition).",
            "s",
            Query("max by (group) (meterflow_consumer_lag_seconds)", "{{group}}"),
        ),
    ]
    fold = [
        chart(
            "Fold rate",
            "Events read by the rollup consumer (new, duplicate, undecodable), and cancels "
            "(applied, unmatched).",
            "ops",
            Query(rate("meterflow_fold_events_total", "outcome"), "events {{outcome}}"),
            Query(rate("meterflow_fold_cancels_total", "outcome"), "cancels {{outcome}}"),
        ),
        chart(
            "Fold failures",
            "Batches rolled back on a database error and read again, and batches fenced by a "
            "rebalance, for every folding consumer.",
            "short",
            Query(increase("meterflow_fold_failures_total"), "rollups failed"),
            Query(increase("meterflow_fold_fenced_total"), "rollups fenced"),
            Query(increase("meterflow_error_report_fold_failures_total"), "error reports failed"),
            Query(increase("meterflow_alert_evaluation_failures_total"), "alert evaluation failed"),
        ),
        chart(
            "Batch sizes",
            "Kafka records per folded batch: large batches mean the fold is catching up.",
            "short",
            *p50_p99("meterflow_fold_batch_records", "records"),
        ),
        chart(
            "Batch fold time",
            "Time to fold one batch into PostgreSQL, its transaction included.",
            "s",
            *p50_p99("meterflow_fold_batch_seconds"),
        ),
    ]
    freshness = [
        heatmap_of(
            "Freshness (accepted → visible in summaries)",
            "From ingest accepting a record's events to the commit that makes them visible in "
            "summaries, per record; the aggregator exports it as a histogram.",
            "meterflow_fold_freshness_seconds",
        ),
        chart(
            "Freshness percentiles",
            "The same, as percentiles; the MeterflowFreshnessSlow alert fires at a p99 over 5 s.",
            "s",
            *p50_p99("meterflow_fold_freshness_seconds"),
        ),
    ]
    rejections = [
        chart(
            "Rejected events by code",
            "Meter event requests refused with a 400 (by Stripe error code), and stream events "
            "rejected asynchronously, as ingest counts them and as error reports fold them.",
            "ops",
            Query(rate("meterflow_meter_event_rejections_total", "code"), "{{code}}"),
            Query(
                rate("meterflow_stream_events_total", "outcome", 'outcome!="accepted"'),
                "stream {{outcome}}",
            ),
            Query(
                rate("meterflow_error_report_rejections_total", "code"), "error reports {{code}}"
            ),
        ),
        chart(
            "Usage relay",
            "Usage changes relayed to the alert evaluators, and relay passes rolled back.",
            "ops",
            Query(rate("meterflow_usage_relay_records_total"), "relayed"),
            Query(rate("meterflow_usage_relay_failures_total"), "failed passes"),
        ),
    ]
    return dashboard(
        "meterflow-pipeline",
        "meterflow / Pipeline",
        "From Kafka to the rollups: lag, fold rate, batches, failures, freshness, rejections.",
        {"Lag": lag, "Fold": fold, "Freshness": freshness, "Rejections": rejections},
    )


def alerts_and_webhooks() -> Dashboard:
    alerts = [
        chart(
            "Alert evaluations",
            "Batches of usage changes evaluated and the changes in them; credit balance alerts "
            "evaluated, by trigger (usage or the recheck sweep).",
            "ops",
            Query(rate("meterflow_alert_batches_total"), "usage batches"),
            Query(rate("meterflow_alert_usage_changes_total"), "usage changes"),
            Query(
                rate("meterflow_credit_alert_evaluations_total", "trigger"),
                "credit alerts ({{trigger}})",
            ),
        ),
        chart(
            "Alert firings",
            "Usage alert firings by recurrence, credit balance alert firings by trigger.",
            "short",
            Query(increase("meterflow_alert_firings_total", "recurrence"), "usage {{recurrence}}"),
            Query(
                increase("meterflow_credit_alert_firings_total", "trigger"), "credit {{trigger}}"
            ),
        ),
        chart(
            "Evaluation latency (p99)",
            "Time to evaluate one batch of usage changes, and credit balance alerts by trigger.",
            "s",
            Query(quantile(0.99, "meterflow_alert_evaluation_seconds"), "usage batch"),
            Query(
                quantile(0.99, "meterflow_credit_alert_evaluation_seconds", "trigger"),
                "credit {{trigger}}",
            ),
        ),
        chart(
            "Notification latency (p99)",
            "From the receipt of the event that crossed a threshold to the firing's commit.",
            "s",
            Query(quantile(0.99, "meterflow_alert_notification_latency_seconds"), "usage"),
            Query(quantile(0.99, "meterflow_credit_alert_notification_latency_seconds"), "credit"),
        ),
        chart(
            "Alert events published",
            "billing.alert.triggered events put on the events topic, by path (direct, or the "
            "sweep of events left unpublished), and attempts that failed.",
            "ops",
            Query(rate("meterflow_alert_events_published_total", "path"), "{{path}}"),
            Query(rate("meterflow_alert_publish_failures_total"), "failed"),
        ),
    ]
    webhooks = [
        chart(
            "Webhook deliveries by outcome",
            "Delivery attempts: succeeded, retrying (failed, will retry), failed (for the last "
            "time).",
            "ops",
            Query(rate("meterflow_webhook_deliveries_total", "outcome"), "{{outcome}}"),
        ),
        chart(
            "Webhook backlog",
            "Deliveries not yet succeeded or given up, and those of them already retried "
            "(every aggregator counts the whole table: the highest count is shown).",
            "short",
            Query("max(meterflow_webhook_deliveries_pending)", "pending"),
            Query("max(meterflow_webhook_deliveries_retrying)", "retrying"),
        ),
        chart(
            "Oldest undelivered webhook",
            "Age of the oldest delivery neither succeeded nor given up; the "
            "MeterflowWebhookBacklogOld alert fires past 15 minutes.",
            "s",
            Query("max(meterflow_webhook_oldest_pending_age_seconds)", "oldest pending"),
        ),
        chart(
            "Webhook delivery time",
            "From connecting to an endpoint to its answer, or to giving up on it; requests in "
            "flight.",
            "s",
            *p50_p99("meterflow_webhook_delivery_seconds"),
            Query("sum(meterflow_webhook_requests_in_flight)", "in flight"),
        ),
    ]
    return dashboard(
        "meterflow-alerts-webhooks",
        "meterflow / Alerts and webhooks",
        "The alert evaluator and webhook delivery: evaluations, firings, latency, deliveries, "
        "backlog.",
        {"Alerts": alerts, "Webhooks": webhooks},
    )


def billing() -> Dashboard:
    invoices = [
        chart(
            "Subscription periods",
            "Periods handled by the invoice closer: scheduled (end recorded), invoiced, "
            "canceled (invoiced and ended), skipped (another closer held it).",
            "short",
            Query(increase("meterflow_invoice_periods_total", "outcome"), "{{outcome}}"),
        ),
        chart(
            "Invoices",
            "Threshold invoices created, and invoices finalized after their grace period.",
            "short",
            Query(increase("meterflow_invoice_thresholds_total"), "threshold invoices"),
            Query(increase("meterflow_invoices_finalized_total"), "finalized"),
        ),
        chart(
            "Invoice closer passes",
            "Passes by outcome: done, or failed because the database was unreachable.",
            "short",
            Query(increase("meterflow_invoice_closer_passes_total", "outcome"), "{{outcome}}"),
        ),
        chart(
            "Credits expired",
            "Credit left on grants past their expiry, debited by the closer (minor units, all "
            "currencies).",
            "short",
            Query(increase("meterflow_credits_expired_minor_units_total"), "expired"),
        ),
    ]
    credit_alerts = [
        chart(
            "Credit balance alerts",
            "Alerts evaluated, fired and re-armed, by trigger.",
            "short",
            Query(
                increase("meterflow_credit_alert_evaluations_total", "trigger"),
                "evaluated {{trigger}}",
            ),
            Query(increase("meterflow_credit_alert_firings_total", "trigger"), "fired {{trigger}}"),
            Query(
                increase("meterflow_credit_alert_rearms_total", "trigger"), "re-armed {{trigger}}"
            ),
        ),
        chart(
            "Credit alert recheck sweep",
            "Customers the sweep took from the recheck queue (ledger and grant changes, new and "
            "reactivated alerts), and sweeps rolled back.",
            "short",
            Query(increase("meterflow_credit_alert_rechecked_customers_total"), "customers"),
            Query(increase("meterflow_credit_alert_sweep_failures_total"), "failed sweeps"),
        ),
    ]
    return dashboard(
        "meterflow-billing",
        "meterflow / Billing",
        "Period closing, invoices and credit balance alerts.",
        {"Invoices": invoices, "Credit balance alerts": credit_alerts},
    )


DASHBOARDS = {
    "overview.json": overview,
    "pipeline.json": pipeline,
    "alerts-and-webhooks.json": alerts_and_webhooks,
    "billing.json": billing,
}


def rendered() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def stale(directory: Path = GENERATED) -> list[str]:
    """Files in ``directory`` that differ from what this module writes, or are missing, or are
    left over from a dashboard that no longer exists."""
    expected = rendered()
    present = {p.name for p in directory.glob("*.json")}
    wrong = [n for n, text in expected.items() if n not in present or _read(directory / n) != text]
    return sorted(wrong + sorted(present - expected.keys()))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.grafana.dashboards")
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    if args.check:
        wrong = stale()
        for name in wrong:
            print(f"{GENERATED / name} is stale: run python -m deploy.grafana.dashboards")
        return 1 if wrong else 0
    GENERATED.mkdir(exist_ok=True)
    for old in GENERATED.glob("*.json"):
        if old.name not in DASHBOARDS:
            old.unlink()
    for name, text in rendered().items():
        (GENERATED / name).write_text(text, encoding="utf-8")
        print(f"wrote {GENERATED / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
