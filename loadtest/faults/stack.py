"""A stack for one fault: PostgreSQL, Kafka, ingest, the aggregator and the alert evaluator on
free loopback ports, with handles to hurt each of them.

It is the bench stack's composition (``loadtest.bench.stack``: the same launchers, environment,
children and rate limits off) with the servers kept at hand: the broker object to pause, stop
and start it, and ``pg_ctl`` for PostgreSQL as an operator would use it. The bench stack has no
supervisor, so a SIGKILLed child is started again here, after the 0.5 s ``meterflow up`` waits
before its first restart.

For the full-disk fault the cluster lives on a size-limited tmpfs (:mod:`loadtest.faults.disk`),
mounted before the server is created and unmounted after it stopped, whatever happened between.

PostgreSQL and Kafka listen below the kernel's ephemeral port range: while one is down, every
client keeps connecting to its port, and a port in that range could be handed to one of those
connections as its source port (a TCP self-connect), so the server could not bind it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.children import ChildService, meterflow_child, wait_http_ready
from deploy.kafka_broker import LocalKafkaBroker
from deploy.ports import LOOPBACK
from deploy.postgres_server import (
    HOST,
    SYSTEM_USER,
    LocalPostgresServer,
    find_bin_dir,
    server_settings,
)
from deploy.stack import kafka_config, postgres_config
from loadtest.bench.stack import UNLIMITED
from loadtest.faults.disk import SmallDisk, keep_logs_off
from meterflow.errors import LauncherError
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings, environment_variables
from meterflow.store.migrations import migrate

READY_TIMEOUT_S = 60.0
RESTART_DELAY_S = 0.5  # meterflow up's first restart backoff
_STOP_DEADLINE_S = 15.0
_PG_CTL_TIMEOUT_S = 60
_PORTS_FROM = 20_000
_EPHEMERAL_LOW = 32_768
_PG_CTL_LOG = "pg_ctl.log"

ChildName = str  # "ingest", "aggregator", "alerts"


def low_ports(count: int) -> list[int]:
    """Distinct free loopback ports below the ephemeral range (see the module docstring)."""
    low = _EPHEMERAL_LOW
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    for _ in range(1000):
        port = random.randrange(_PORTS_FROM, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise LauncherError("no free ports below the ephemeral range")


@dataclass
class FaultStack:
    settings: Settings
    base_url: str
    database_url: str
    postgres: LocalPostgresServer
    kafka: LocalKafkaBroker
    children: dict[ChildName, ChildService]
    ready_urls: dict[ChildName, str]
    postgres_under_pg_ctl: bool = False
    small_disk: SmallDisk | None = None  # under the cluster, for the full-disk fault

    # -- the processes ---------------------------------------------------------------------

    def kill_and_restart(self, name: ChildName) -> None:
        """SIGKILL a child, wait for it to be gone, and start it again (no supervisor here)."""
        child = self.children[name]
        assert child.process is not None  # noqa: S101 - started by the stack
        child.process.send_signal(signal.SIGKILL)
        child.process.wait(timeout=10)
        time.sleep(RESTART_DELAY_S)
        child.start()

    def pause_kafka(self, seconds: float) -> None:
        pid = self.kafka.pid
        assert pid is not None  # noqa: S101 - started by the stack
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart_kafka(self) -> None:
        """A clean broker stop (SIGTERM) and a start on the same data and ports."""
        self.kafka.stop()
        self.kafka.start()

    def restart_postgres(self) -> None:
        self._pg_ctl("restart", "-m", "fast", "-l", str(self._pg_ctl_log))
        self.postgres_under_pg_ctl = True

    def stop_postgres(self, seconds: float) -> None:
        self._pg_ctl("stop", "-m", "fast")
        try:
            time.sleep(seconds)
        finally:
            self.start_postgres()

    def start_postgres(self) -> None:
        """``pg_ctl start`` (waiting until it accepts connections) with the launcher's settings."""
        options = " ".join(
            f"-c {shlex.quote(f'{name}={value}')}"
            for name, value in server_settings(self.postgres.config).items()
        )
        self._pg_ctl("start", "-o", options, "-l", str(self._pg_ctl_log))
        self.postgres_under_pg_ctl = True

    def postgres_running(self) -> bool:
        """Whether a postmaster runs on the cluster (``pg_ctl status``), recovering or not."""
        _ = self.postgres.pid  # reaps the first postmaster if it exited, so it is not seen alive
        return self._pg_ctl("status", check=False) == 0

    def postgres_accepting(self) -> bool:
        """Whether the server accepts connections (``pg_isready``)."""
        config = self.postgres.config
        bin_dir = config.bin_dir or find_bin_dir()
        argv = [str(bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(config.port), "-t", "2"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(argv, check=False, timeout=_PG_CTL_TIMEOUT_S, env=env)
        return done.returncode == 0

    @property
    def postgres_logs(self) -> list[Path]:
        """The server's output: the launcher's log, then ``pg_ctl``'s once it restarted it."""
        return [self.postgres.config.log_file, self._pg_ctl_log]

    @property
    def _pg_ctl_log(self) -> Path:
        return self.postgres.config.data_dir / _PG_CTL_LOG

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        config = self.postgres.config
        bin_dir = config.bin_dir or find_bin_dir()
        argv = [str(bin_dir / "pg_ctl"), "-D", str(config.pgdata), "-w", *args]
        credentials: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server runs as meterflow-pg, and pg_ctl refuses root
            account = pwd.getpwnam(SYSTEM_USER)
            credentials = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            self._pg_ctl_log.touch()
            os.chown(self._pg_ctl_log, account.pw_uid, account.pw_gid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        try:
            # The server's output goes to the -l file: a pipe left open by it would hang us.
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=check,
                timeout=_PG_CTL_TIMEOUT_S,
                cwd=config.pgdata,
                env=env,
                **credentials,
            )
        except subprocess.CalledProcessError as exc:
            raise LauncherError(f"pg_ctl {args[0]} failed: {exc.stderr.decode()}") from exc
        return done.returncode

    def close_postgres(self) -> None:
        if self.postgres_under_pg_ctl:
            with contextlib.suppress(LauncherError, subprocess.TimeoutExpired):
                self._pg_ctl("stop", "-m", "fast")
        self.postgres.stop()  # reaps the first postmaster, if pg_ctl has not replaced it


def _environment(database_url: str, bootstrap: str, ports: dict[str, int]) -> dict[str, str]:
    ours = set(environment_variables())
    env = {k: v for k, v in os.environ.items() if k not in ours} | UNLIMITED
    return env | {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "METERFLOW_HTTP_HOST": LOOPBACK,
        **{f"METERFLOW_{name}_PORT": str(port) for name, port in ports.items()},
        "METERFLOW_LOG_LEVEL": "WARNING",
    }


async def _prepare(database_url: str, bootstrap: str, prefix: str) -> None:
    await migrate(database_url)
    await ensure_topics(bootstrap, topic_specs(prefix))


@contextlib.contextmanager
def fault_stack(
    data_dir: Path,
    log_dir: Path,
    say: Callable[[str], None],
    *,
    postgres_disk_mb: int | None = None,
) -> Iterator[FaultStack]:
    """A running stack under ``data_dir``, its processes logging to ``log_dir``.

    With ``postgres_disk_mb``, PostgreSQL's data directory is a tmpfs of that size, its logs
    kept beside it and copied to ``log_dir`` at the end; :class:`~loadtest.faults.disk.
    MountRefused` when it cannot be mounted, before anything started.
    """
    pg_port, kafka_port, controller_port, http_port, metrics_port, alerts_port = low_ports(6)
    settings = Settings().with_overrides(
        data_dir=data_dir,
        local_postgres_port=pg_port,
        local_kafka_port=kafka_port,
        local_kafka_controller_port=controller_port,
        http_port=http_port,
        aggregator_metrics_port=metrics_port,
        alerts_metrics_port=alerts_port,
        log_level="WARNING",
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgresServer(postgres_config(settings), say=say)
    if postgres_disk_mb is None:
        with _running_stack(settings, postgres, log_dir, say) as stack:
            yield stack
        return
    disk = SmallDisk(postgres.config.data_dir, postgres_disk_mb)
    disk.mount()
    logs_elsewhere = data_dir / "postgres-logs"
    try:
        keep_logs_off(disk, [postgres.config.log_file.name, _PG_CTL_LOG], logs_elsewhere)
        with _running_stack(settings, postgres, log_dir, say, small_disk=disk) as stack:
            yield stack
    finally:
        try:
            for log in logs_elsewhere.glob("*.log"):
                shutil.copyfile(log, log_dir / log.name)
        finally:
            disk.unmount(say)


@contextlib.contextmanager
def _running_stack(
    settings: Settings,
    postgres: LocalPostgresServer,
    log_dir: Path,
    say: Callable[[str], None],
    *,
    small_disk: SmallDisk | None = None,
) -> Iterator[FaultStack]:
    launcher = settings.launcher
    pg_port, kafka_port = launcher.local_postgres_port, launcher.local_kafka_port
    http_port = settings.ingest.http_port
    metrics_port = settings.aggregator.aggregator_metrics_port
    alerts_port = settings.alerts.alerts_metrics_port
    kafka = LocalKafkaBroker(kafka_config(settings), say=say)
    stack: FaultStack | None = None
    try:
        postgres.start()
        kafka.start()
        asyncio.run(_prepare(postgres.dsn, kafka.bootstrap_servers, settings.topic_prefix))
        ports = {
            "HTTP": http_port,
            "AGGREGATOR_METRICS": metrics_port,
            "ALERTS_METRICS": alerts_port,
        }
        env = _environment(postgres.dsn, kafka.bootstrap_servers, ports)
        base_url = f"http://{LOOPBACK}:{http_port}"
        stack = FaultStack(
            settings=settings,
            base_url=base_url,
            database_url=postgres.dsn,
            postgres=postgres,
            kafka=kafka,
            children={
                name: meterflow_child(name, env, log_dir / f"{name}.log")
                for name in ("ingest", "aggregator", "alerts")
            },
            small_disk=small_disk,
            ready_urls={
                "ingest": f"{base_url}/readyz",
                "aggregator": f"http://{LOOPBACK}:{metrics_port}/readyz",
                "alerts": f"http://{LOOPBACK}:{alerts_port}/readyz",
            },
        )
        for child in stack.children.values():
            child.start()
        for name, child in stack.children.items():
            wait_http_ready(stack.ready_urls[name], child, READY_TIMEOUT_S)
        say(f"stack up: API {base_url}, PostgreSQL :{pg_port}, Kafka :{kafka_port}")
        yield stack
    finally:
        if stack is not None:
            for child in reversed(stack.children.values()):
                child.stop(_STOP_DEADLINE_S)
        try:
            kafka.stop()
        finally:
            if stack is not None:
                stack.close_postgres()
            else:
                postgres.stop()
