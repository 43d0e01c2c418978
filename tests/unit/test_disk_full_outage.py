"""PostgreSQL out of disk (SQLSTATE 53100, ``DiskFullError``) is waited out like an outage.

A server whose disk is full still answers reads but fails every write until an operator frees
space, then carries on by itself: the aggregator's loops count it as an outage and retry with
backoff, and ingest answers 503 with ``Retry-After`` rather than a 500.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

import asyncpg
import orjson
import pytest
from asyncpg.exceptions import DiskFullError
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from ingest.edge.http import Request, Response
from ingest.edge.routing import Route, Router
from meterflow.lifecycle.reconnect import Backoff, DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS, is_database_outage


def disk_full() -> DiskFullError:
    return DiskFullError('could not extend file "base/16384/16415": No space left on device')


def test_a_full_disk_is_an_outage_and_a_database_error() -> None:
    exc = disk_full()
    assert exc.sqlstate == "53100"
    assert is_database_outage(exc)
    assert isinstance(exc, DATABASE_ERRORS)
    assert is_database_outage(ExceptionGroup("lanes", [exc, ConnectionRefusedError()]))


def test_other_resource_errors_are_still_not_outages() -> None:
    assert not is_database_outage(asyncpg.exceptions.ConfigurationLimitExceededError("locks"))


def test_a_retry_counts_a_full_disk_as_an_outage() -> None:
    registry = CollectorRegistry()
    retry = DatabaseRetry("rollups", registry, backoff=Backoff(jitter=lambda: 1.0))
    assert retry.failed(disk_full()) == pytest.approx(0.2)
    assert retry.in_outage
    retry.succeeded()
    labels = {"component": "rollups"}
    assert registry.get_sample_value("meterflow_database_outage_errors_total", labels) == 1
    assert registry.get_sample_value("meterflow_database_reconnects_total", labels) == 1


async def _write_fails(_request: Request) -> Response:
    raise disk_full()


async def _call(app: IngestApp, path: str) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), orjson.loads(body["body"])


@pytest.mark.parametrize("path", ["/v1/full", "/v2/full"])
async def test_ingest_answers_a_full_disk_503_with_retry_after(path: str) -> None:
    registry = CollectorRegistry()
    app = IngestApp(Settings(), registry)
    # What startup would set, minus the database: one public route whose write fails.
    app._router = Router(
        [Route("POST", path, _write_fails, authenticated=False, limit_class="operational")]
    )
    app._authenticator = cast(Any, object())  # unused by a public route
    app._idempotent = cast(Any, object())  # unused by a public route
    status, headers, body = await _call(app, path)
    assert status == 503, body
    assert headers[b"retry-after"] == b"1"
    assert body["error"]["type"] == "api_error"
    assert "No space left" not in body["error"]["message"]  # internals stay inside
    outages = registry.get_sample_value(
        "meterflow_database_outage_errors_total", {"component": "ingest"}
    )
    assert outages == 1
