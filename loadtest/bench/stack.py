"""The benchmark's own stack, started with ``meterflow up``'s pieces on free loopback ports.

PostgreSQL and Kafka come from the deploy launchers with their data in a scratch directory;
migrations and topics are applied; ingest, the aggregator and the alert evaluator run as child
processes exactly as ``meterflow up`` runs them, logging to files. Per-account rate limits are
switched off so the measurements show the pipeline, not the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.children import ChildService, meterflow_child, wait_http_ready
from deploy.ports import LOOPBACK, free_port
from deploy.stack import local_kafka, local_postgres
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings, environment_variables, load_settings
from meterflow.store.migrations import migrate

# How long a bench child may take to become ready, and to stop.
READY_TIMEOUT_S = 60.0
STOP_DEADLINE_S = 15.0
# Switched off for the measurements: the per-account token buckets (1,000 events/s single,
# 10,000 stream, 100 or 25 requests/s for the rest of the API) would otherwise be what the
# max-rate and billing phases measure; so is the failed-authentication limit per address, since
# every generator connects from the same one.
UNLIMITED = {
    "METERFLOW_RATE_LIMIT_METER_EVENTS_PER_S": "0",
    "METERFLOW_RATE_LIMIT_STREAM_EVENTS_PER_S": "0",
    "METERFLOW_RATE_LIMIT_API_LIVE_PER_S": "0",
    "METERFLOW_RATE_LIMIT_API_TEST_PER_S": "0",
    "METERFLOW_RATE_LIMIT_AUTH_FAILURES": "0",
}


INVOICE_GRACE_ENV = "METERFLOW_INVOICE_GRACE_S"


@dataclass(slots=True)
class BenchStack:
    settings: Settings
    base_url: str
    database_url: str
    bootstrap: str
    env: dict[str, str]
    postgres_pid: int | None
    kafka_pid: int | None
    ingest: ChildService
    aggregator: ChildService
    alerts: ChildService
    log_dir: Path

    def child_env(self, **overrides: str) -> dict[str, str]:
        return {**self.env, **overrides}


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _clean_environment() -> dict[str, str]:
    """This process's environment without meterflow's own settings, which the stack sets."""
    ours = set(environment_variables())
    return {k: v for k, v in os.environ.items() if k not in ours}


async def _prepare(database_url: str, bootstrap: str, prefix: str) -> None:
    await migrate(database_url)
    await ensure_topics(bootstrap, topic_specs(prefix))


@contextlib.contextmanager
def bench_stack(data_dir: Path, log_dir: Path, say: Callable[[str], None]) -> Iterator[BenchStack]:
    ports = distinct_free_ports(6)
    pg_port, kafka_port, controller_port, http_port, metrics_port, alerts_port = ports
    settings = Settings().with_overrides(
        data_dir=data_dir,
        local_postgres_port=pg_port,
        local_kafka_port=kafka_port,
        local_kafka_controller_port=controller_port,
        http_port=http_port,
        aggregator_metrics_port=metrics_port,
        alerts_metrics_port=alerts_port,
        log_level="WARNING",
        # The one launcher setting a bench run takes from the environment, for A/B runs.
        local_postgres_settings=load_settings().launcher.local_postgres_settings,
    )
    if settings.launcher.local_postgres_settings:
        say(f"PostgreSQL settings: {dict(settings.launcher.local_postgres_settings)}")
    log_dir.mkdir(parents=True, exist_ok=True)
    with local_postgres(settings, say) as postgres, local_kafka(settings, say) as kafka:
        asyncio.run(_prepare(postgres.address, kafka.address, settings.topic_prefix))
        env = _clean_environment() | UNLIMITED
        env |= {
            "DATABASE_URL": postgres.address,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.address,
            "METERFLOW_HTTP_HOST": LOOPBACK,
            "METERFLOW_HTTP_PORT": str(http_port),
            # The soak may start more ingest processes on the same port.
            "METERFLOW_HTTP_REUSE_PORT": "1",
            "METERFLOW_AGGREGATOR_METRICS_PORT": str(metrics_port),
            "METERFLOW_ALERTS_METRICS_PORT": str(alerts_port),
            "METERFLOW_LOG_LEVEL": "WARNING",
            # The closing phase waits out one grace period.
            INVOICE_GRACE_ENV: "30",
        }
        ingest = meterflow_child("ingest", env, log_dir / "ingest.log")
        aggregator = meterflow_child("aggregator", env, log_dir / "aggregator.log")
        alerts = meterflow_child("alerts", env, log_dir / "alerts.log")
        base_url = f"http://{LOOPBACK}:{http_port}"
        try:
            for child in (ingest, aggregator, alerts):
                child.start()
            wait_http_ready(f"{base_url}/readyz", ingest, READY_TIMEOUT_S)
            metrics = f"http://{LOOPBACK}:{metrics_port}/metrics"
            wait_http_ready(metrics, aggregator, READY_TIMEOUT_S)
            alerts_metrics = f"http://{LOOPBACK}:{alerts_port}/metrics"
            wait_http_ready(alerts_metrics, alerts, READY_TIMEOUT_S)
            say(f"stack up: API {base_url}, PostgreSQL :{pg_port}, Kafka :{kafka_port}")
            yield BenchStack(
                settings=settings,
                base_url=base_url,
                database_url=postgres.address,
                bootstrap=kafka.address,
                env=env,
                postgres_pid=postgres.pid,
                kafka_pid=kafka.pid,
                ingest=ingest,
                aggregator=aggregator,
                alerts=alerts,
                log_dir=log_dir,
            )
        finally:
            for child in (alerts, aggregator, ingest):
                child.stop(STOP_DEADLINE_S)


INGEST_METRICS_PORT_ENV = "METERFLOW_INGEST_METRICS_PORT"


def extra_ingest_processes(stack: BenchStack, count: int) -> list[ChildService]:
    """``count`` more ingest processes on the API port (SO_REUSEPORT), not started. Each also
    listens on a port of its own for ``/readyz`` and ``/metrics``: a probe on the shared port
    may be answered by any of them."""
    return [
        meterflow_child(
            "ingest",
            stack.child_env(**{INGEST_METRICS_PORT_ENV: str(port)}),
            stack.log_dir / f"ingest-{n + 2}.log",
            name=f"ingest {n + 2}",
        )
        for n, port in enumerate(distinct_free_ports(count))
    ]


def own_ready_url(child: ChildService) -> str:
    """The ``/readyz`` of an ingest process from :func:`extra_ingest_processes`."""
    return f"http://{LOOPBACK}:{child.env[INGEST_METRICS_PORT_ENV]}/readyz"


async def start_ready(children: Sequence[ChildService]) -> None:
    """Start ingest processes from :func:`extra_ingest_processes` and wait until each is ready."""
    for child in children:
        child.start()
    for child in children:
        await asyncio.to_thread(wait_http_ready, own_ready_url(child), child, READY_TIMEOUT_S)


def stop_all(children: Sequence[ChildService]) -> None:
    """Stop each child in turn, each within :data:`STOP_DEADLINE_S`."""
    for child in children:
        child.stop(STOP_DEADLINE_S)
