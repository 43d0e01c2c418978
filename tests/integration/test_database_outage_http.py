"""PostgreSQL restarted or stopped under ingest: every endpoint answers 503 with ``Retry-After``
in Stripe's error shape, never a 500, and service resumes by itself once the server is back.

The server is this module's own (:mod:`tests.fixtures.postgres_outage`), never the session's;
Kafka stays up throughout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from meterflow.settings import Settings
from meterflow.store.accounts import create_account, create_key
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import create_meter
from tests.fixtures.outage_load import (
    V1_EVENTS,
    V2_EVENTS,
    Answer,
    Event,
    Load,
    ask,
    refusals_without_retry_after,
)
from tests.fixtures.postgres_outage import (
    RestartablePostgres,
    fresh_migrated_database,
    restartable_postgres,
)

pytestmark = pytest.mark.integration

STOP_S = 10.0


@pytest.fixture(scope="module")
def outage_pg() -> Iterator[RestartablePostgres]:
    with restartable_postgres() as pg:
        yield pg


@dataclass(frozen=True, slots=True)
class Stack:
    settings: Settings
    url: str
    key: str  # used from the start: in ingest's key cache
    fresh_key: str  # never used before the outage: authenticating it needs the database
    meter_id: str


@pytest.fixture
async def database_url(outage_pg: RestartablePostgres) -> str:
    """The suite's fixture overridden: this module's databases live on its own server, and the
    suite's ``ingest_settings`` (Kafka, fresh topics, a free port, limits) point there."""
    return await fresh_migrated_database(outage_pg)


@pytest.fixture
async def stack(database_url: str, ingest_settings: Settings) -> AsyncIterator[Stack]:
    conn = await asyncpg.connect(database_url)
    try:
        account = await create_account(conn, "outage")
        fresh_key = await create_key(conn, account.account_id, livemode=False)
    finally:
        await conn.close()
    settings = ingest_settings.with_overrides(
        db_pool_max=6,
        auth_cache_ttl_s=3600,
        meter_cache_ttl_s=3600,
    )
    with running_ingest(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=15.0) as http:
            meter = await create_meter(http, account.secret_key)
            # Warm the key and meter caches: the handlers, not authentication, meet the outage.
            warm = Event("warm-1", "cus_warm", 1, V1_EVENTS)
            assert (await ask(http, "POST", V1_EVENTS, key=account.secret_key, event=warm)).status
        yield Stack(settings, url, account.secret_key, fresh_key, meter["id"])


async def _routes(settings: Settings) -> list[tuple[str, str, bool]]:
    """(method, path template, authenticated) of every route ingest serves."""
    app = IngestApp(settings, CollectorRegistry())
    await app.startup()
    try:
        return [(r.method, r.template, r.authenticated) for r in app.routes]
    finally:
        await app.shutdown()


def _well_formed_refusal(answer: Answer) -> bool:
    error = answer.stripe_error()
    return (
        answer.status == 503
        and answer.retry_after == "1"
        and error is not None
        and error["type"] == "api_error"
    )


def _valid_requests(meter_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests that pass validation and so must reach the database."""
    now = int(time.time()) // 60 * 60
    return [
        ("GET", "/v1/billing/meters", {}),
        ("GET", f"/v1/billing/meters/{meter_id}", {}),
        ("POST", "/v1/billing/meters", {"data": {
            "display_name": "Second", "event_name": "second",
            "default_aggregation[formula]": "sum"}}),
        ("GET", f"/v1/billing/meters/{meter_id}/event_summaries", {"params": {
            "customer": "cus_1", "start_time": now - 3600, "end_time": now}}),
        ("POST", V1_EVENTS, Event("down-1", "cus_1", 1, V1_EVENTS).request()),
        ("POST", V2_EVENTS, Event("down-2", "cus_1", 1, V2_EVENTS).request()),
        ("GET", "/v1/customers", {}),
        ("GET", "/v1/billing/alerts", {}),
        ("GET", "/v1/events", {}),
        ("GET", "/v2/core/events", {}),
        ("GET", "/v1/webhook_endpoints", {}),
    ]  # fmt: skip


async def test_every_endpoint_answers_503_with_retry_after_while_postgres_is_down(
    stack: Stack, outage_pg: RestartablePostgres
) -> None:
    routes = await _routes(stack.settings)
    assert len(routes) > 50
    await asyncio.to_thread(outage_pg.stop_fast)
    async with httpx.AsyncClient(base_url=stack.url, timeout=15.0) as http:
        answers: list[Answer] = []
        for method, template, authenticated in routes:
            path = re.sub(r"\{\w+\}", "x_unknown1", template)
            cached = await ask(http, method, path, key=stack.key)
            answers.append(cached)
            if authenticated:
                # The key lookup itself meets the outage.
                fresh = await ask(http, method, path, key=stack.fresh_key)
                assert _well_formed_refusal(fresh), fresh
        assert refusals_without_retry_after(answers) == []
        # Anything else was refused before the database was asked (a missing parameter).
        assert {(a.path, a.status) for a in answers if a.status not in (200, 400, 404, 503)} == {
            ("/v2/billing/meter_event_stream", 401)  # a secret key is no session token
        }
        by_path = {a.path: a for a in answers}
        assert by_path["/healthz"].status == 200
        assert _well_formed_refusal(by_path["/readyz"]), by_path["/readyz"]
        for method, path, request in _valid_requests(stack.meter_id):
            answer = await ask(http, method, path, key=stack.key, **request)
            assert _well_formed_refusal(answer), answer

        await asyncio.to_thread(outage_pg.start)

        # Service resumes by itself: the pool reconnects, with no restart of ingest.
        async def serving() -> bool:
            answer = await ask(http, "GET", "/v1/billing/meters", key=stack.fresh_key)
            event = Event(f"up-{time.monotonic_ns()}", "cus_1", 1, V2_EVENTS)
            sent = await ask(http, "POST", V2_EVENTS, key=stack.key, event=event)
            return answer.status == 200 and sent.status == 200

        await wait_until(serving, 30, "ingest to serve again", interval_s=0.2)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text


@pytest.mark.timeout(120)
async def test_fast_restarts_under_load_give_503s_or_successes_never_500s(
    stack: Stack, outage_pg: RestartablePostgres
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=15.0) as http:
        load = Load(http, stack.key)
        load.start()
        try:
            await wait_until(load.succeeding_since(0.0, 20), 20, "load before the restarts")
            for _ in range(3):
                await asyncio.to_thread(outage_pg.restart_fast)
                restarted_at = time.monotonic()
                await wait_until(load.succeeding_since(restarted_at, 8), 30, "a restart's end")
        finally:
            await load.stop()
    statuses = {a.status for a in load.answers}
    assert statuses <= {200, 503}, [a for a in load.answers if a.status not in (200, 503)][:3]
    assert refusals_without_retry_after(load.answers) == []


@pytest.mark.timeout(120)
async def test_a_ten_second_stop_gives_503_with_retry_after_to_every_request(
    stack: Stack, outage_pg: RestartablePostgres
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=15.0) as http:
        load = Load(http, stack.key)
        load.start()
        try:
            await wait_until(load.succeeding_since(0.0, 20), 20, "load before the stop")
            await asyncio.to_thread(outage_pg.stop_fast)
            stopped_at = time.monotonic()
            await asyncio.sleep(STOP_S)
            starting_at = time.monotonic()
            await asyncio.to_thread(outage_pg.start)
            started_at = time.monotonic()
            await wait_until(load.succeeding_since(started_at, 8), 30, "service after the stop")
        finally:
            await load.stop()
    down = [a for a in load.answers if stopped_at < a.started and a.finished < starting_at]
    assert len(down) > 20, len(down)
    assert [a for a in down if not _well_formed_refusal(a)] == [], down[:3]
    assert {a.status for a in load.answers} <= {200, 503}
    assert refusals_without_retry_after(load.answers) == []
