"""``meterflow up``: the whole stack on one machine, in dependency order, stopped in reverse.

1. PostgreSQL: ``DATABASE_URL`` if set, else a local server with its data under the data dir.
2. Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft broker from Maven Central jars.
3. Migrations and topics, both idempotent.
4. A fresh test-mode secret key for the ``local`` account (created on first run).
5. The services as child processes, each awaited until ready.
On SIGINT/SIGTERM (or a child dying) everything stops in reverse order within its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import asyncpg

from deploy.kafka_broker import KafkaBrokerConfig, LocalKafkaBroker
from deploy.postgres_server import LocalPostgresServer, PostgresServerConfig
from meterflow.accounts import account_by_name, create_account, create_key
from meterflow.errors import LauncherError
from meterflow.migrations import migrate
from meterflow.settings import Settings
from meterflow.topics import ensure_topics, topic_specs

LOCAL_ACCOUNT = "local"
_READY_TIMEOUT_S = 30.0


def _say(message: str) -> None:
    print(f"meterflow up: {message}", flush=True)


@dataclass
class ChildService:
    """A meterflow component running as a child process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, deadline_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            _say(f"{self.name} did not stop within {deadline_s:.0f}s; killing it")
            self.process.kill()
            self.process.wait()


def _wait_http_ready(url: str, child: ChildService, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise LauncherError(f"{child.name} exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise LauncherError(f"{child.name} was not ready at {url} within {timeout_s:.0f}s")


async def _prepare(database_url: str, bootstrap: str, settings: Settings) -> str:
    applied = await migrate(database_url)
    _say(f"migrations applied: {', '.join(applied) or 'none pending'}")
    created = await ensure_topics(bootstrap, topic_specs(settings.topic_prefix))
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


@contextlib.contextmanager
def _local_postgres(settings: Settings) -> Iterator[str]:
    if settings.database_url:
        yield settings.database_url
        return
    server = LocalPostgresServer(
        PostgresServerConfig(
            data_dir=settings.data_dir / "postgres", port=settings.local_postgres_port
        )
    )
    _say(f"starting PostgreSQL on 127.0.0.1:{settings.local_postgres_port}")
    with server:  # starts it, and stops it on the way out
        yield server.dsn


@contextlib.contextmanager
def _local_kafka(settings: Settings) -> Iterator[str]:
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    broker = LocalKafkaBroker(
        KafkaBrokerConfig(
            version=settings.kafka_version,
            cache_dir=settings.cache_dir,
            data_dir=settings.data_dir / "kafka",
            port=settings.local_kafka_port,
            controller_port=settings.local_kafka_controller_port,
        )
    )
    _say(f"starting Kafka {settings.kafka_version} on 127.0.0.1:{settings.local_kafka_port}")
    with broker:  # starts it, and stops it on the way out
        yield broker.bootstrap_servers


def run_stack(settings: Settings) -> int:
    started = time.monotonic()
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _local_postgres(settings) as database_url, _local_kafka(settings) as bootstrap:
            key = asyncio.run(_prepare(database_url, bootstrap, settings))
            env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
            children = [
                ChildService("ingest", [sys.executable, "-m", "meterflow.cli", "ingest"], env),
                ChildService(
                    "aggregator", [sys.executable, "-m", "meterflow.cli", "aggregator"], env
                ),
            ]
            try:
                return _serve(settings, children, key, started)
            finally:
                # Once stopping, further signals must not cut the ordered shutdown short.
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
                for child in reversed(children):
                    child.stop(settings.shutdown_deadline_s)
    except _Stop:
        _say("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(settings: Settings, children: list[ChildService], key: str, started: float) -> int:
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    for child in children:
        child.start()
    _wait_http_ready(f"{base_url}/readyz", children[0], _READY_TIMEOUT_S)
    aggregator_metrics = f"http://{settings.http_host}:{settings.aggregator_metrics_port}/metrics"
    _wait_http_ready(aggregator_metrics, children[1], _READY_TIMEOUT_S)
    _say(f"stack up in {time.monotonic() - started:.1f}s")
    print(f"\n  API:        {base_url}\n  metrics:    {base_url}/metrics", flush=True)
    print(f"  aggregator: {aggregator_metrics}", flush=True)
    print(f"  test key:   {key}\n\n  Ctrl-C stops everything.\n", flush=True)
    while all(child.alive() for child in children):
        time.sleep(0.5)
    _say(f"{', '.join(c.name for c in children if not c.alive())} exited; stopping the stack")
    return 1
