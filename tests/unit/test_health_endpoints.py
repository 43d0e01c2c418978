"""The consumer processes' health port: /healthz, /readyz from the components, /metrics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from meterflow.lifecycle.health import HealthEndpoints


class Part:
    def __init__(self, name: str, *, ready: bool) -> None:
        self.name = name
        self.is_ready = ready

    async def start(self) -> None:
        pass

    def ready(self) -> bool:
        return self.is_ready

    async def run(self) -> None:
        pass

    def request_stop(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _get(app: HealthEndpoints, path: str) -> tuple[str, bytes]:
    answered: list[str] = []

    def start_response(status: str, _headers: list[tuple[str, str]], *_: Any) -> None:
        answered.append(status)

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    body: Iterable[bytes] = app(environ, start_response)
    return answered[0], b"".join(body)


def test_healthz_answers_while_the_process_runs() -> None:
    app = HealthEndpoints(CollectorRegistry())
    assert _get(app, "/healthz") == ("200 OK", b'{"status":"ok"}')


def test_readyz_is_503_until_components_are_watched() -> None:
    status, body = _get(HealthEndpoints(CollectorRegistry()), "/readyz")
    assert status.startswith("503")
    assert orjson.loads(body) == {"status": "not ready", "not_ready": ["starting"]}


def test_readyz_names_the_components_that_are_not_ready() -> None:
    app = HealthEndpoints(CollectorRegistry())
    rollups, relay = Part("rollups", ready=False), Part("usage-relay", ready=True)
    app.watch([rollups, relay])
    status, body = _get(app, "/readyz")
    assert status.startswith("503")
    assert orjson.loads(body)["not_ready"] == ["rollups"]

    rollups.is_ready = True
    assert _get(app, "/readyz") == ("200 OK", b'{"status":"ready"}')

    relay.is_ready = False  # stopping, or a rebalance took its partitions
    assert _get(app, "/readyz")[0].startswith("503")


def test_metrics_come_from_the_registry_on_every_other_path() -> None:
    registry = CollectorRegistry()
    Counter("meterflow_probe_total", "A counter.", registry=registry).inc()
    app = HealthEndpoints(registry)
    for path in ("/metrics", "/"):
        status, body = _get(app, path)
        assert status == "200 OK"
        assert b"meterflow_probe_total 1.0" in body
