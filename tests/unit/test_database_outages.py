"""Telling a database outage from a bug, the backoff that waits one out, and its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from asyncpg.exceptions import ClientConfigurationError
from prometheus_client import CollectorRegistry

from ingest.edge.errors import ApiError, DatabaseUnavailable
from ingest.edge.http import Response, error_response, error_response_v2
from meterflow.kafka.consumer import reseek_until_done
from meterflow.lifecycle.reconnect import Backoff, DatabaseRetry, outage_metrics
from meterflow.store.outages import DATABASE_ERRORS, is_database_outage


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),  # a pool that cannot connect in time
        OSError(113, "No route to host"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.PostgresConnectionError("connection failure"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another server"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.OutOfMemoryError("out of memory"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError("unexpected exchange"),
        asyncpg.exceptions.ProtocolError("unexpected message"),
        ExceptionGroup("workers", [ConnectionRefusedError(), asyncpg.InterfaceError("closed")]),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_what_an_unreachable_database_raises_is_an_outage(exc: Exception) -> None:
    assert is_database_outage(exc)
    assert isinstance(exc, (*DATABASE_ERRORS, ExceptionGroup))


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        ClientConfigurationError("invalid DSN"),
        ValueError("a bug"),
        KeyError("a bug"),
        ExceptionGroup("workers", [ConnectionRefusedError(), ValueError("a bug")]),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_of_a_reachable_database_or_of_the_code_are_not_outages(exc: Exception) -> None:
    assert not is_database_outage(exc)


def test_backoff_doubles_from_its_minimum_to_its_maximum_and_starts_over_on_reset() -> None:
    backoff = Backoff(min_s=0.2, max_s=5.0, jitter=lambda: 1.0)
    assert [round(backoff.next_delay_s(), 3) for _ in range(7)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0,
    ]  # fmt: skip
    assert backoff.failures == 7
    backoff.reset()
    assert backoff.next_delay_s() == pytest.approx(0.2)
    default = Backoff(jitter=lambda: 1.0)
    assert [default.next_delay_s() for _ in range(10_000)][-1] == pytest.approx(2.0)


def test_backoff_jitter_spreads_each_delay_over_its_upper_half() -> None:
    low = Backoff(min_s=1.0, max_s=8.0, jitter=lambda: 0.0)
    assert [low.next_delay_s() for _ in range(3)] == [0.5, 1.0, 2.0]


def _sample(registry: CollectorRegistry, name: str, component: str) -> float:
    return registry.get_sample_value(name, {"component": component}) or 0.0


def test_a_retry_counts_outage_errors_and_the_reconnect_after_them() -> None:
    registry = CollectorRegistry()
    relay = DatabaseRetry("usage-relay", registry, backoff=Backoff(jitter=lambda: 1.0))
    DatabaseRetry("invoice-closer", registry)
    assert relay.failed(asyncpg.InternalClientError("cut off")) == pytest.approx(0.2)
    assert relay.failed(ConnectionRefusedError()) == pytest.approx(0.4)
    during = relay.in_outage
    relay.succeeded()
    relay.succeeded()  # one reconnect per outage
    assert (during, relay.in_outage) == (True, False)
    assert relay.failed(asyncpg.UniqueViolationError("a bug")) == pytest.approx(0.2)
    relay.succeeded()
    assert _sample(registry, "meterflow_database_outage_errors_total", "usage-relay") == 2
    assert _sample(registry, "meterflow_database_reconnects_total", "usage-relay") == 1
    assert _sample(registry, "meterflow_database_outage_errors_total", "invoice-closer") == 0
    assert outage_metrics(registry) is outage_metrics(registry)


async def test_a_pause_ends_early_when_the_component_is_asked_to_stop() -> None:
    retry = DatabaseRetry("maintenance", CollectorRegistry(), backoff=Backoff(min_s=30.0))
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(retry.pause(ConnectionRefusedError(), stopping), 1.0)


@pytest.mark.parametrize("render", [error_response, error_response_v2])
def test_a_database_outage_answers_503_with_retry_after_in_stripes_shape(
    render: Callable[[ApiError], Response],
) -> None:
    response = render(DatabaseUnavailable())
    assert response.status == 503
    assert (b"retry-after", b"1") in response.headers
    error = orjson.loads(response.body)["error"]
    assert error["type"] == "api_error"
    assert "Retry-After" in error["message"]
    if render is error_response_v2:
        assert error["code"] == "service_unavailable"


def test_a_full_disk_is_named_in_the_503_and_an_unreachable_server_is_not() -> None:
    full = DatabaseUnavailable.for_outage(asyncpg.exceptions.DiskFullError("no space left"))
    gone = DatabaseUnavailable.for_outage(ConnectionRefusedError(111, "Connection refused"))
    for unavailable in (full, gone):
        assert unavailable.status == 503
        assert unavailable.headers == {"Retry-After": "1"}
    assert "disk is full" in full.message
    assert "cannot reach its database" in gone.message
    assert "disk" not in gone.message


async def test_a_seek_that_reads_again_does_not_end_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    retry = DatabaseRetry("rollups", registry, backoff=Backoff(min_s=0.0, max_s=0.0))
    seeks: list[int] = []

    async def seek() -> None:
        seeks.append(len(seeks))
        if len(seeks) < 3:
            raise ConnectionRefusedError(111, "Connection refused")

    with caplog.at_level("INFO", logger="meterflow.lifecycle"):
        # A batch fails on a full disk, the seek back works once the server answers reads...
        retry.failed(asyncpg.exceptions.DiskFullError("no space left"))
        await reseek_until_done(seek, asyncio.Event(), retry)
        assert len(seeks) == 3
        assert retry.in_outage
        # ...and the next batch fails again: still the same outage, warned about once.
        retry.failed(asyncpg.exceptions.DiskFullError("no space left"))
        retry.succeeded()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    reconnects = registry.get_sample_value(
        "meterflow_database_reconnects_total", {"component": "rollups"}
    )
    assert reconnects == 1.0
