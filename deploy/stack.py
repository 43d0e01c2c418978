"""``meterflow up``: the whole stack on one machine, in dependency order, stopped in reverse.

1. PostgreSQL: ``DATABASE_URL`` if set, else a local server with its data under the data dir.
2. Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft broker from Maven Central jars.
3. Migrations and topics, both idempotent.
4. A fresh test-mode secret key for the ``local`` account (created on first run).
5. The services as child processes, each awaited until ready: components of
   :func:`~meterflow.lifecycle.driver.drive`, like the parts of every service. A child that dies
   is restarted with backoff (:mod:`deploy.children`, :mod:`deploy.restarts`). Ingest may be
   several processes on one port (:mod:`deploy.ingest_processes`), each supervised alone.
On SIGINT/SIGTERM, or when a child crash-loops, everything stops in reverse order within its
deadline. Every process started here gets a signal from the kernel if this one is killed
(:func:`~deploy.processes.die_with_parent`), and a PostgreSQL or Kafka left running by an earlier
launcher is stopped and started afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import asyncpg

from deploy.children import ServiceProcess, meterflow_child
from deploy.children import say as _say
from deploy.ingest_processes import ingest_process_plans
from deploy.kafka_broker import KafkaBrokerConfig, LocalKafkaBroker
from deploy.postgres_server import LocalPostgresServer, PostgresServerConfig
from deploy.up_output import (
    ProgressReporter,
    child_log_env,
    forget_local_stack,
    record_local_stack,
)
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.supervision import BackgroundTaskFailed
from meterflow.settings import Settings
from meterflow.store.accounts import account_by_name, create_account, create_key
from meterflow.store.migrations import migrate

LOCAL_ACCOUNT = "local"
_KILL_MARGIN_S = 5.0


async def _prepare(database_url: str, bootstrap: str, settings: Settings) -> str:
    applied = await migrate(database_url)
    _say(f"migrations applied: {', '.join(applied) or 'none pending'}")
    created = await ensure_topics(
        bootstrap, topic_specs(settings.topic_prefix), security=settings.kafka
    )
    _say(f"topics created: {', '.join(created) or 'none (all present)'}")
    conn = await asyncpg.connect(database_url)
    try:
        account_id = await account_by_name(conn, LOCAL_ACCOUNT)
        if account_id is None:
            return (await create_account(conn, LOCAL_ACCOUNT)).secret_key
        return await create_key(conn, account_id, livemode=False)
    finally:
        await conn.close()


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


@dataclass(frozen=True, slots=True)
class RunningService:
    """Where a dependency answers; ``pid`` is set only when this process started it."""

    address: str
    pid: int | None = None


@contextlib.contextmanager
def local_postgres(
    settings: Settings, say: Callable[[str], None] = _say
) -> Iterator[RunningService]:
    """``DATABASE_URL`` if set, else a local server under the data dir, stopped on exit."""
    if settings.database_url:
        yield RunningService(settings.database_url)
        return
    server = LocalPostgresServer(postgres_config(settings), say=say)
    say(f"starting PostgreSQL on 127.0.0.1:{settings.launcher.local_postgres_port}")
    with server:  # starts it, and stops it on the way out
        say(f"PostgreSQL running (pid {server.pid})")
        yield RunningService(server.dsn, server.pid)
    say("PostgreSQL stopped")


def postgres_config(settings: Settings) -> PostgresServerConfig:
    """The local PostgreSQL ``meterflow up`` runs."""
    return PostgresServerConfig(
        data_dir=settings.launcher.data_dir / "postgres",
        port=settings.launcher.local_postgres_port,
        extra_settings=dict(settings.launcher.local_postgres_settings),
    )


def kafka_config(settings: Settings) -> KafkaBrokerConfig:
    """The local Kafka broker ``meterflow up`` runs."""
    return KafkaBrokerConfig(
        version=settings.launcher.kafka_version,
        cache_dir=settings.launcher.cache_dir,
        data_dir=settings.launcher.data_dir / "kafka",
        port=settings.launcher.local_kafka_port,
        controller_port=settings.launcher.local_kafka_controller_port,
    )


@contextlib.contextmanager
def local_kafka(settings: Settings, say: Callable[[str], None] = _say) -> Iterator[RunningService]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local broker under the data dir."""
    if settings.kafka_bootstrap_servers:
        yield RunningService(settings.kafka_bootstrap_servers)
        return
    broker = LocalKafkaBroker(kafka_config(settings), say=say)
    say(
        f"starting Kafka {settings.launcher.kafka_version} "
        f"on 127.0.0.1:{settings.launcher.local_kafka_port}"
    )
    with broker:  # starts it, and stops it on the way out
        say(f"Kafka running (pid {broker.pid})")
        yield RunningService(broker.bootstrap_servers, broker.pid)
    say("Kafka stopped")


def run_stack(settings: Settings) -> int:
    started = time.monotonic()
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_postgres(settings) as postgres, local_kafka(settings) as kafka:
            try:
                return asyncio.run(_serve(settings, postgres.address, kafka.address, started))
            finally:
                # Once stopping, further signals must not cut the ordered shutdown short.
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
    except _Stop:
        _say("stopped")
        return 0
    finally:
        forget_local_stack(settings)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve(settings: Settings, database_url: str, bootstrap: str, started: float) -> int:
    """Prepare the database and topics, then run the services until a signal or a crash loop."""
    key = await _prepare(database_url, bootstrap, settings)
    env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    env |= child_log_env(settings)
    host = settings.http_host
    base_url = f"http://{host}:{settings.ingest.http_port}"
    record_local_stack(settings, database_url, bootstrap, base_url)
    aggregator_metrics = f"http://{host}:{settings.aggregator.aggregator_metrics_port}/metrics"
    alerts_metrics = f"http://{host}:{settings.alerts.alerts_metrics_port}/metrics"
    # Ready once their consumers joined their groups, so nothing comes after the banner.
    aggregator_ready = aggregator_metrics.replace("/metrics", "/readyz")
    alerts_ready = alerts_metrics.replace("/metrics", "/readyz")
    deadline_s = settings.shutdown_deadline_s
    ingest = ingest_process_plans(settings)
    services = [
        ServiceProcess(
            meterflow_child("ingest", env | plan.env, name=plan.name),
            plan.ready_url,
            deadline_s,
            say=_say,
        )
        for plan in ingest
    ]
    services += [
        ServiceProcess(meterflow_child(name, env), url, deadline_s, say=_say)
        for name, url in (("aggregator", aggregator_ready), ("alerts", alerts_ready))
    ]
    progress = ProgressReporter(
        {
            **{plan.name: plan.metrics_url for plan in ingest},
            "aggregator": aggregator_metrics,
            "alerts": alerts_metrics,
        },
        settings.launcher.progress_interval_s,
        _say,
    )

    def running() -> None:
        _say(f"stack up in {time.monotonic() - started:.1f}s")
        print(f"\n  API:        {base_url}", flush=True)
        for plan in ingest:
            shown = "" if len(ingest) == 1 else f" ({plan.name})"
            print(f"  metrics:    {plan.metrics_url}{shown}", flush=True)
        print(f"  aggregator: {aggregator_metrics}", flush=True)
        print(f"  alerts:     {alerts_metrics}", flush=True)
        print(f"  test key:   {key}\n\n  Ctrl-C stops everything.\n", flush=True)

    try:
        # A child's own stop is bounded by the deadline; the margin lets it kill the child.
        await drive(
            [*services, progress], deadline_s=deadline_s + _KILL_MARGIN_S, on_running=running
        )
    except BackgroundTaskFailed:
        _say_restarts(services)
        crash_looped = [f"{s.name} {s.gave_up}" for s in services if s.gave_up]
        _say(f"stopped the stack: {'; '.join(crash_looped) or 'a child failed'}")
        return 1
    _say_restarts(services)
    _say("stopped")
    return 0


def _say_restarts(services: list[ServiceProcess]) -> None:
    for service in services:
        if service.restarts:
            reasons = ", ".join(f"{why}: {n}" for why, n in service.restarts.most_common())
            _say(f"{service.name} was restarted {service.restarts.total()} time(s) ({reasons})")
