"""The dashboards and the rules, proven on a real Prometheus scraping a real stack.

``meterflow ingest``, ``aggregator`` and ``alerts`` run as processes on the test's PostgreSQL and
Kafka; Debian's ``prometheus`` scrapes them every second with ``deploy/prometheus/rules.yml``
loaded. Traffic goes through the API: meters, a subscription, webhook endpoints (one answering
200, one 500), a usage alert that fires and a credit balance alert, events (one of them invalid),
a cancel, a stream with an event rejected asynchronously, and a burst over the rate limit.

Then every expression of every dashboard panel (as committed) and every rule is evaluated through
Prometheus's HTTP API. Each must parse, name only metrics the targets expose (a misspelled name
fails, data or not), match only on label names their series carry, and return data, unless it is
listed in ``KNOWN_EMPTY`` with the reason. An alert's expression returns data only while the
alert fires: on this healthy stack none may fire (each alert's promtool test makes it fire).
``SIGNALS`` are what the traffic must have shown, checked the same way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from deploy.ports import free_port
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.credit_alerts import ALERTS, credit_alert_form
from tests.fixtures.meterflow_processes import log_tails, meterflow_processes
from tests.fixtures.prometheus_server import PROMETHEUS, PrometheusApi, running_prometheus
from tests.fixtures.promql import (
    RULES,
    Expression,
    dashboard_expressions,
    rule_expressions,
    selectors,
    with_rate_interval,
)
from tests.fixtures.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not found: install Debian's prometheus package (apt-get install "
        "prometheus; .ci/run does) to prove the dashboards and rules on a real Prometheus",
    ),
]

# Grafana sends at least four scrape intervals; a longer window only smooths.
RATE_INTERVAL = "30s"
_SETTLE_TIMEOUT_S = 60.0

# Panel queries (by file, title and refId) that this traffic leaves empty, and why.
KNOWN_EMPTY = {
    "overview.json: HTTP 4xx and 5xx [B]": "no 5xx: nothing fails on a healthy stack",
    "overview.json: Refused by the HTTP edge [A]": "no malformed, oversized or slow requests sent",
    "overview.json: Database outages [B]": "PostgreSQL stays up: nothing reconnects",
}


# What this traffic must show, beyond "some data": each holds (returns data) once it does.
SIGNALS = [
    Expression(
        "one invalid event",
        'sum(meterflow_meter_event_rejections_total{code="payload_invalid_value"}) == 1',
        "signal",
    ),
    Expression(
        "the burst got 429s", 'sum(meterflow_http_requests_total{status="429"}) > 0', "signal"
    ),
    Expression(
        "the stream rejection folded",
        'sum(meterflow_error_report_rejections_total{code="no_meter"}) >= 1',
        "signal",
    ),
    Expression("the usage alert fired", "sum(meterflow_alert_firings_total) >= 1", "signal"),
    Expression(
        "the credit alert was evaluated",
        "sum(meterflow_credit_alert_evaluations_total) >= 1",
        "signal",
    ),
    Expression(
        "a webhook delivered",
        'sum(meterflow_webhook_deliveries_total{outcome="succeeded"}) >= 1',
        "signal",
    ),
    Expression(
        "a webhook awaits its retry", "max(meterflow_webhook_deliveries_retrying) >= 1", "signal"
    ),
    Expression("and ages", "max(meterflow_webhook_oldest_pending_age_seconds) > 0", "signal"),
    Expression(
        "events folded, freshness observed",
        "sum(meterflow_fold_freshness_seconds_count) >= 6",
        "signal",
    ),
    Expression(
        "a cancel applied", 'sum(meterflow_fold_cancels_total{outcome="applied"}) == 1', "signal"
    ),
    Expression(
        "maintenance ran", "max(meterflow_maintenance_last_done_timestamp_seconds) > 0", "signal"
    ),
    Expression(
        "lag in seconds for 3 groups",
        "count(max by (group) (meterflow_consumer_lag_seconds)) == 3",
        "signal",
    ),
]


async def _post(http: httpx.AsyncClient, key: str, path: str, form: dict[str, str]) -> str:
    response = await http.post(path, data=form, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, f"{path}: {response.text}"
    return str(response.json().get("id", ""))


async def _cancel_once_folded(
    http: httpx.AsyncClient, key: str, event_name: str, identifier: str
) -> None:
    """Cancel an event, which can be done once it is folded (404 until then)."""
    form = {"event_name": event_name, "type": "cancel", "cancel[identifier]": identifier}
    deadline = time.monotonic() + 20
    while True:
        response = await http.post(
            "/v1/billing/meter_event_adjustments",
            data=form,
            headers={"Authorization": f"Bearer {key}"},
        )
        if response.status_code != 404 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return
        await asyncio.sleep(0.2)


async def _traffic(http: httpx.AsyncClient, key: str, noisy_key: str, hooks: Sequence[str]) -> None:
    """Everything the dashboards show, once: see the module docstring."""
    delivered, failing = hooks
    await _post(http, key, "/v1/webhook_endpoints", {"url": delivered, "enabled_events[]": "*"})
    await _post(
        http,
        key,
        "/v1/webhook_endpoints",
        {"url": failing, "enabled_events[]": "billing.alert.triggered"},
    )
    billing = Billing(http, key)
    meter = await billing.meter("tokens", "sum")
    price = await billing.price(meter, unit_amount="1")
    customer = await _post(http, key, "/v1/customers", {"name": "Jenny Rosen"})
    await _post(http, key, "/v1/subscriptions", {"customer": customer, "items[0][price]": price})
    await _post(http, key, ALERTS, credit_alert_form(customer, 500))
    usage_alert = {
        "alert_type": "usage_threshold",
        "title": "Tokens over 10",
        "usage_threshold[gte]": "10",
        "usage_threshold[meter]": meter,
        "usage_threshold[recurrence]": "one_time",
        "usage_threshold[filters][0][type]": "customer",
        "usage_threshold[filters][0][customer]": customer,
    }
    await _post(http, key, ALERTS, usage_alert)
    for n in range(4):  # 5 + 5 + 5 + 5 crosses the alert's 10
        await billing.event("tokens", customer, f"evt-{n}", value="5")
    v2 = await http.post(
        "/v2/billing/meter_events",
        json={"event_name": "tokens", "payload": {"stripe_customer_id": customer, "value": "1"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert v2.status_code == 200, v2.text
    invalid = await http.post(
        "/v1/billing/meter_events",
        data={
            "event_name": "tokens",
            "payload[stripe_customer_id]": customer,
            "payload[value]": "x",
        },
        headers={"Authorization": f"Bearer {key}"},
    )
    assert invalid.status_code == 400, invalid.text
    await _cancel_once_folded(http, key, "tokens", "evt-3")
    session = await http.post(
        "/v2/billing/meter_event_session", json={}, headers={"Authorization": f"Bearer {key}"}
    )
    assert session.status_code == 200, session.text
    token = session.json()["authentication_token"]
    payload = {"stripe_customer_id": customer, "value": "2"}
    stream = await http.post(
        "/v2/billing/meter_event_stream",
        json={
            "events": [
                {"event_name": "tokens", "payload": payload},
                {"event_name": "no_such_meter", "payload": payload},  # rejected: no_meter
            ]
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert stream.status_code == 200, stream.text
    # Another account over its meter-event limit (20 a second, in the environment below).
    noisy = Billing(http, noisy_key)
    await noisy.meter("tokens", "sum")
    burst = await asyncio.gather(
        *(
            http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": "tokens",
                    "payload[stripe_customer_id]": "c",
                    "payload[value]": "1",
                },
                headers={"Authorization": f"Bearer {noisy_key}"},
            )
            for _ in range(40)
        )
    )
    assert 429 in {r.status_code for r in burst}


async def _problems(
    api: PrometheusApi, expressions: Sequence[Expression], known_empty: dict[str, str]
) -> list[str]:
    """What is wrong with each expression: invalid, an unknown metric or label, or no data."""
    names = await api.metric_names()
    labels: dict[str, set[str]] = {}
    found = []
    for expression in expressions:
        result = await api.query(with_rate_interval(expression.expr, RATE_INTERVAL))
        if result.error is not None:
            found.append(f"{expression.where}: invalid: {result.error}")
            continue
        for selector in selectors(expression.expr):
            if selector.metric not in names:
                found.append(f"{expression.where}: no metric named {selector.metric}")
                continue
            if selector.metric not in labels:
                labels[selector.metric] = await api.label_names(selector.metric)
            # A family exposed without series yet has no labels to check against.
            unknown = set(selector.labels) - labels[selector.metric]
            if labels[selector.metric] and unknown:
                found.append(f"{expression.where}: {selector.metric} has no label {unknown}")
        empty_is_fine = expression.kind == "alert" or expression.where in known_empty
        if result.series == 0 and not empty_is_fine:
            found.append(f"{expression.where}: no data")
    return found


async def _settled(api: PrometheusApi, expressions: Sequence[Expression]) -> list[str]:
    """Poll until every expression returns what it should; the problems left at the deadline."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while True:
        problems = await _problems(api, expressions, KNOWN_EMPTY)
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(1)


async def test_every_dashboard_and_rule_expression_on_a_real_prometheus(
    tmp_path: Path,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    make_account: AccountFactory,
) -> None:
    ports = {"ingest": free_port(), "aggregator": free_port(), "alerts": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERFLOW_")}
    env.update(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        METERFLOW_TOPIC_PREFIX=topic_prefix,
        METERFLOW_DATA_DIR=str(tmp_path / "data"),
        METERFLOW_HTTP_PORT=str(ports["ingest"]),
        METERFLOW_AGGREGATOR_METRICS_PORT=str(ports["aggregator"]),
        METERFLOW_ALERTS_METRICS_PORT=str(ports["alerts"]),
        METERFLOW_CONSUMER_GROUP=f"g-{topic_prefix}",
        METERFLOW_ALERTS_CONSUMER_GROUP=f"alerts-{topic_prefix}",
        METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS="1",  # the receivers are on 127.0.0.1
        METERFLOW_RATE_LIMIT_METER_EVENTS_PER_S="20",
    )
    ready = {role: f"http://127.0.0.1:{port}/readyz" for role, port in ports.items()}
    logs = tmp_path / "logs"
    logs.mkdir()
    key = (await make_account()).secret_key
    noisy_key = (await make_account("noisy")).secret_key
    expressions = dashboard_expressions() + rule_expressions()

    async with (
        WebhookReceiver() as delivered,
        WebhookReceiver(default_status=500) as failing,
        meterflow_processes(env, ready, logs),
        running_prometheus(
            tmp_path / "prometheus", {f"meterflow-{r}": p for r, p in ports.items()}, RULES
        ) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['ingest']}", timeout=10) as http,
    ):
        await _traffic(http, key, noisy_key, [delivered.url, failing.url])
        problems = await _settled(api, expressions + SIGNALS)
        assert problems == [], "\n".join(problems) + "\n" + log_tails(logs)

        # The check itself: a misspelled metric or label is caught, even where no data is due.
        misspelled = [
            Expression("metric", "sum(rate(meterflow_fold_event_total[1m]))", "panel"),
            Expression("label", 'sum(meterflow_http_requests_total{stauts="500"})', "panel"),
        ]
        known_empty = {"metric": "misspelled", "label": "misspelled"}
        assert await _problems(api, misspelled, known_empty) == [
            "metric: no metric named meterflow_fold_event_total",
            "label: meterflow_http_requests_total has no label {'stauts'}",
        ]

        where = {e.where for e in expressions}
        assert set(KNOWN_EMPTY) <= where, "KNOWN_EMPTY names a query that no longer exists"

        rules = await api.rules()
        assert len(rules) == len(rule_expressions())
        assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
        assert [
            a["labels"]["alertname"] for a in await api.alerts() if a["state"] == "firing"
        ] == []
        assert set((await api.targets_up()).values()) == {"up"}
        assert delivered.received, "no webhook was delivered"
        assert failing.received, "the failing endpoint was never tried"
