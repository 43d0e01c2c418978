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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import asyncpg

from deploy.kafka_broker import KafkaBrokerConfig, LocalKafkaBroker
from deploy.postgres_server import LocalPostgresServer, PostgresServerConfig
from meterflow.errors import LauncherError
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings
from meterflow.store.accounts import account_by_name, create_account, create_key
from meterflow.store.migrations import migrate

LOCAL_ACCOUNT = "local"
_READY_TIMEOUT_S = 30.0


def _say(message: str) -> None:
    print(f"meterflow up: {message}", flush=True)


@dataclass
class ChildService:
    """A meterflow component running as a child process.

    Its output goes to ``log_path`` when given (appended), else to this process's own.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        if self.log_path is None:
            self.process = subprocess.Popen(self.argv, env=self.env)
            return
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, deadline_s: float) -> None:
        try:
            self._terminate(deadline_s)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _terminate(self, deadline_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            _say(f"{self.name} did not stop within {deadline_s:.0f}s; killing it")
            self.process.kill()
            self.process.wait()


def meterflow_child(
    command: str, env: dict[str, str], log_path: Path | None = None
) -> ChildService:
    """``meterflow <command>`` (``ingest``, ``aggregator``, ``alerts``) with this interpreter, as a
    child."""
    return ChildService(
        command, [sys.executable, "-m", "deploy.cli", command], env, log_path=log_path
    )


def wait_http_ready(url: str, child: ChildService, timeout_s: float) -> None:
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
    server = LocalPostgresServer(
        PostgresServerConfig(
            data_dir=settings.launcher.data_dir / "postgres",
            port=settings.launcher.local_postgres_port,
        )
    )
    say(f"starting PostgreSQL on 127.0.0.1:{settings.launcher.local_postgres_port}")
    with server:  # starts it, and stops it on the way out
        yield RunningService(server.dsn, server.pid)


@contextlib.contextmanager
def local_kafka(settings: Settings, say: Callable[[str], None] = _say) -> Iterator[RunningService]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local broker under the data dir."""
    if settings.kafka_bootstrap_servers:
        yield RunningService(settings.kafka_bootstrap_servers)
        return
    broker = LocalKafkaBroker(
        KafkaBrokerConfig(
            version=settings.launcher.kafka_version,
            cache_dir=settings.launcher.cache_dir,
            data_dir=settings.launcher.data_dir / "kafka",
            port=settings.launcher.local_kafka_port,
            controller_port=settings.launcher.local_kafka_controller_port,
        )
    )
    say(
        f"starting Kafka {settings.launcher.kafka_version} "
        f"on 127.0.0.1:{settings.launcher.local_kafka_port}"
    )
    with broker:  # starts it, and stops it on the way out
        yield RunningService(broker.bootstrap_servers, broker.pid)


def run_stack(settings: Settings) -> int:
    started = time.monotonic()
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_postgres(settings) as postgres, local_kafka(settings) as kafka:
            database_url, bootstrap = postgres.address, kafka.address
            key = asyncio.run(_prepare(database_url, bootstrap, settings))
            env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
            children = [
                meterflow_child("ingest", env),
                meterflow_child("aggregator", env),
                meterflow_child("alerts", env),
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
    base_url = f"http://{settings.http_host}:{settings.ingest.http_port}"
    for child in children:
        child.start()
    wait_http_ready(f"{base_url}/readyz", children[0], _READY_TIMEOUT_S)
    aggregator_metrics = (
        f"http://{settings.http_host}:{settings.aggregator.aggregator_metrics_port}/metrics"
    )
    wait_http_ready(aggregator_metrics, children[1], _READY_TIMEOUT_S)
    alerts_metrics = f"http://{settings.http_host}:{settings.alerts.alerts_metrics_port}/metrics"
    wait_http_ready(alerts_metrics, children[2], _READY_TIMEOUT_S)
    _say(f"stack up in {time.monotonic() - started:.1f}s")
    print(f"\n  API:        {base_url}\n  metrics:    {base_url}/metrics", flush=True)
    print(f"  aggregator: {aggregator_metrics}", flush=True)
    print(f"  alerts:     {alerts_metrics}", flush=True)
    print(f"  test key:   {key}\n\n  Ctrl-C stops everything.\n", flush=True)
    while all(child.alive() for child in children):
        time.sleep(0.5)
    _say(f"{', '.join(c.name for c in children if not c.alive())} exited; stopping the stack")
    return 1
