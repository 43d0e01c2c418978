"""PostgreSQL restarted (``pg_ctl restart -m fast``) and then stopped for 10 s under a steady
stream of events, with ingest, a real ``meterflow aggregator`` and a real ``meterflow alerts``
running: no 500s, every 503 carries ``Retry-After``, both processes outlive the outage, and
every event acknowledged with a 200 is counted exactly once in the rollups afterwards.

Half the clients name their events, which makes ingest check the identifier in PostgreSQL (so
they get 503s while it is down); the other half do not, so ingest accepts their events without
the database and the aggregator has to fold them once the server is back.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.ports import free_port
from meterflow.settings import Settings, environment_variables
from meterflow.store.accounts import create_account
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import customer_totals, wait_until
from tests.fixtures.meter_events_http import auth, create_meter
from tests.fixtures.outage_load import V2_EVENTS, Event, Load, ask, refusals_without_retry_after
from tests.fixtures.outage_processes import MeterflowProcess
from tests.fixtures.postgres_outage import (
    RestartablePostgres,
    fresh_migrated_database,
    restartable_postgres,
)

pytestmark = pytest.mark.integration

STOP_S = 10.0
# Every one of these touches the database at least once a second, so each meets the outage.
POLLING_AGGREGATOR_PARTS = (
    "usage-relay", "maintenance", "invoice-closer", "error-report-closer", "webhook-delivery",
)  # fmt: skip
POLLING_ALERT_PARTS = ("credit-alert-rechecks", "alert-event-sweep")
LATE_CUSTOMER = "cus_late"
ALERT_GTE = 50


@pytest.fixture(scope="module")
def outage_pg() -> Iterator[RestartablePostgres]:
    with restartable_postgres() as pg:
        yield pg


@pytest.fixture
async def database_url(outage_pg: RestartablePostgres) -> str:
    """The suite's fixture overridden: this module's databases live on its own server, and the
    suite's ``ingest_settings`` (Kafka, fresh topics, a free port, limits) point there."""
    return await fresh_migrated_database(outage_pg)


def _process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``meterflow`` child: this test's settings, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if k not in environment_variables()}
    assert settings.database_url is not None
    assert settings.kafka_bootstrap_servers is not None
    return env | {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "METERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "METERFLOW_CONSUMER_GROUP": f"g-{settings.topic_prefix}",
        "METERFLOW_ALERTS_CONSUMER_GROUP": f"alerts-{settings.topic_prefix}",
        "METERFLOW_MAINTENANCE_INTERVAL_S": "1",
        "METERFLOW_INVOICE_TICK_S": "0.5",
        "METERFLOW_CONSUMER_NICE": "0",
        "METERFLOW_SHUTDOWN_DEADLINE_S": "5",
        **extra,
    }


async def _create_alert(http: httpx.AsyncClient, key: str, meter_id: str) -> None:
    form = {
        "alert_type": "usage_threshold",
        "title": "Late customer",
        "usage_threshold[gte]": str(ALERT_GTE),
        "usage_threshold[meter]": meter_id,
        "usage_threshold[recurrence]": "one_time",
        "usage_threshold[filters][0][type]": "customer",
        "usage_threshold[filters][0][customer]": LATE_CUSTOMER,
    }
    response = await http.post("/v1/billing/alerts", data=form, headers=auth(key))
    assert response.status_code == 200, response.text


async def _alert_triggered(http: httpx.AsyncClient, key: str) -> bool:
    response = await http.get(
        "/v1/events", params={"type": "billing.alert.triggered"}, headers=auth(key)
    )
    return response.status_code == 200 and len(response.json()["data"]) == 1


async def _reconnected(process: MeterflowProcess, parts: tuple[str, ...]) -> bool:
    errors = await process.by_component("meterflow_database_outage_errors_total")
    reconnects = await process.by_component("meterflow_database_reconnects_total")
    return all(errors.get(p, 0) > 0 and reconnects.get(p, 0) >= 1 for p in parts)


@pytest.mark.timeout(240)
async def test_a_restart_and_a_ten_second_stop_lose_and_double_no_acknowledged_event(
    database_url: str,
    outage_pg: RestartablePostgres,
    ingest_settings: Settings,
    tmp_path: Path,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        account = await create_account(conn, "pipeline")
    finally:
        await conn.close()
    settings = ingest_settings.with_overrides(
        db_pool_max=6,
        auth_cache_ttl_s=3600,
        meter_cache_ttl_s=3600,
    )
    aggregator_port, alerts_port = free_port(), free_port()
    aggregator_env = _process_env(settings, METERFLOW_AGGREGATOR_METRICS_PORT=str(aggregator_port))
    alerts_env = _process_env(settings, METERFLOW_ALERTS_METRICS_PORT=str(alerts_port))
    with running_ingest(settings) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=15.0) as http,
            MeterflowProcess("aggregator", aggregator_env, aggregator_port, tmp_path / "agg.log")
            as aggregator,
            MeterflowProcess("alerts", alerts_env, alerts_port, tmp_path / "alerts.log") as alerts,
        ):  # fmt: skip
            meter = await create_meter(http, account.secret_key)
            await _create_alert(http, account.secret_key, meter["id"])
            load = Load(http, account.secret_key, clients=4, anonymous=2)
            load.start()
            try:
                await wait_until(load.succeeding_since(0.0, 20), 30, "acks before the outage")
                # 1. A fast restart: every connection is cut, the server is back in a moment.
                await asyncio.to_thread(outage_pg.restart_fast)
                restarted_at = time.monotonic()
                await wait_until(load.succeeding_since(restarted_at, 8), 30, "acks again")
                # 2. Ten seconds with nothing listening.
                await asyncio.to_thread(outage_pg.stop_fast)
                stopped_at = time.monotonic()
                await asyncio.sleep(STOP_S)
                starting_at = time.monotonic()
                await asyncio.to_thread(outage_pg.start)
                started_at = time.monotonic()
                await wait_until(load.succeeding_since(started_at, 8), 30, "acks after the stop")
            finally:
                await load.stop()

            # The processes outlived the outage, and each polling part reconnected by itself.
            assert aggregator.exit_status is None, aggregator.log_tail()
            assert alerts.exit_status is None, alerts.log_tail()
            await wait_until(
                lambda: _reconnected(aggregator, POLLING_AGGREGATOR_PARTS), 30, "reconnects"
            )
            await wait_until(lambda: _reconnected(alerts, POLLING_ALERT_PARTS), 30, "reconnects")

            # No 500s; every refusal is a 503 in Stripe's shape with Retry-After.
            assert {a.status for a in load.answers} <= {200, 503}, [
                a for a in load.answers if a.status not in (200, 503)
            ][:3]
            assert refusals_without_retry_after(load.answers) == []
            down = [a for a in load.since(stopped_at) if a.finished < starting_at]
            named_down = [a for a in down if a.event is not None and a.event.identifier]
            assert named_down, "no named event was sent while the database was down"
            assert {a.status for a in named_down} == {503}
            # Events without identifiers were accepted throughout: Kafka was up.
            assert any(a.status == 200 for a in down if a.event and not a.event.identifier)

            # Every acknowledged event is in the rollups exactly once (and nothing refused is).
            expected = load.acknowledged_totals()

            async def folded_exactly() -> bool:
                totals = await customer_totals(database_url)
                return {c: t for c, t in totals.items() if c in expected} == expected

            await wait_until(folded_exactly, 60, f"rollups to equal {expected}", interval_s=0.2)

            # The usage relay and the alert evaluator work after the outage: a threshold
            # crossed now fires its alert.
            late = Event(f"late-{time.monotonic_ns()}", LATE_CUSTOMER, ALERT_GTE, V2_EVENTS)
            sent = await ask(http, "POST", V2_EVENTS, key=account.secret_key, event=late)
            assert sent.status == 200, sent
            await wait_until(
                lambda: _alert_triggered(http, account.secret_key), 30, "the alert to fire"
            )
            assert aggregator.exit_status is None, aggregator.log_tail()
            assert alerts.exit_status is None, alerts.log_tail()
