"""A real single-node Apache Kafka broker built from Maven Central jars, for local runs and tests.

No Docker and no Apache download mirror are needed: ``deploy/kafka/pom.xml`` lets Maven copy the
broker's runtime jars into a per-version cache once (:mod:`deploy.kafka_jars`); every later start
works offline. The node is a combined broker+controller (KRaft, static quorum) listening on
127.0.0.1 only.

The broker gets SIGTERM from the kernel if the launcher dies without stopping it. A broker left
running on the same data directory by an earlier launcher is stopped before starting.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from deploy.kafka_jars import KAFKA_ASSETS, ensure_kafka_jars, output_tail
from deploy.processes import all_pids, command_line, die_with_parent, signal_quietly, wait_gone
from meterflow.errors import LauncherError

logger = logging.getLogger(__name__)

LOG4J2_CONFIG = KAFKA_ASSETS / "log4j2.properties"

_TAIL_LINES = 40


@dataclass(frozen=True)
class KafkaBrokerConfig:
    """Where and how one local broker runs; ``data_dir`` holds its storage, logs and settings.

    ``extra_properties`` override server.properties entries for tuning; the launcher owns
    ``log.dirs``, ``node.id`` and the listeners, so leave those alone.
    """

    version: str
    cache_dir: Path
    data_dir: Path
    port: int
    controller_port: int
    heap_mb: int = 512
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    # SCRAM-SHA-512 users (name -> password) written into the cluster's metadata when its
    # storage is formatted, for a broker whose extra_properties turn SASL on.
    scram_credentials: Mapping[str, str] = field(default_factory=dict, repr=False)


class LocalKafkaBroker:
    """A ``java kafka.Kafka`` child process; use as a context manager or call start()/stop()."""

    def __init__(
        self, config: KafkaBrokerConfig, say: Callable[[str], None] = logger.warning
    ) -> None:
        self.config = config
        self._say = say
        data_dir = config.data_dir.resolve()
        self._log_dirs = data_dir / "kraft-logs"
        self._logs_dir = data_dir / "logs"
        self._native_tmp = data_dir / "tmp"
        self._properties = data_dir / "server.properties"
        self._cluster_id_file = data_dir / "cluster-id"
        self._out_path = self._logs_dir / "kafka.out"
        self._process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 120.0) -> None:
        """Fetch jars if needed, format storage once, launch, and wait until clients can connect."""
        if self._process is not None and self._process.poll() is None:
            return
        cfg = self.config
        self._stop_leftover_brokers(timeout_s / 4)
        for port in (cfg.port, cfg.controller_port):
            if not _port_is_free(port):
                raise LauncherError(f"127.0.0.1:{port} is already in use by another process")
        libs = ensure_kafka_jars(cfg.version, cfg.cache_dir)
        java = shutil.which("java")
        if java is None:
            raise LauncherError("java is not on PATH; Kafka needs a Java 17+ runtime")
        for directory in (self._logs_dir, self._native_tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self._properties.write_text(_render_properties(self._server_properties()))
        if not (self._log_dirs / "meta.properties").is_file():
            self._format_storage(java, libs)
        self._out = self._out_path.open("ab")
        self._process = subprocess.Popen(
            [*self._jvm_argv(java, libs, cfg.heap_mb), "kafka.Kafka", str(self._properties)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=cfg.data_dir,
            # A session of its own: a terminal's Ctrl-C reaches the launcher, which stops the
            # broker after the services that use it.
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only calls prctl
        )
        try:
            self._wait_until_ready(self._process, timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout_s``; safe to call repeatedly."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def leftover_pids(self) -> list[int]:
        """Brokers running on this data directory that this object did not start."""
        ours = None if self._process is None else self._process.pid
        properties = str(self._properties)
        return [
            pid
            for pid in all_pids()
            if pid not in (ours, os.getpid()) and _runs_broker(command_line(pid), properties)
        ]

    def _stop_leftover_brokers(self, timeout_s: float) -> None:
        """Stop a broker an earlier launcher left running here (killed before it could stop it):
        SIGTERM, then SIGKILL after ``timeout_s``. It holds the ports and the storage lock, and
        was started with settings this launcher may no longer write, so it is never adopted."""
        for pid in self.leftover_pids():
            self._say(
                f"Kafka from an earlier run (pid {pid}) is still running on "
                f"{self.config.data_dir}; stopping it to start it afresh"
            )
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            except PermissionError as exc:
                raise LauncherError(
                    f"a Kafka broker of another user (pid {pid}) runs on {self.config.data_dir}; "
                    "run meterflow up as the user who owns the data directory"
                ) from exc
            if not wait_gone(pid, timeout_s):
                self._say(f"Kafka (pid {pid}) did not stop within {timeout_s:.0f}s; killing it")
                signal_quietly(pid, signal.SIGKILL)
                wait_gone(pid, 10.0)

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last lines the broker wrote to stdout/stderr (WARN and above, JVM errors)."""
        try:
            text = self._out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return output_tail(text, lines)

    def _server_properties(self) -> dict[str, str]:
        cfg = self.config
        client = f"127.0.0.1:{cfg.port}"
        controller = f"127.0.0.1:{cfg.controller_port}"
        properties = {
            # One node that is both broker and controller, with a static one-voter quorum
            # (controller.quorum.voters needs a fixed controller port; port 0 does not work).
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{client}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._log_dirs),
            # meterflow creates every topic explicitly (meterflow.kafka.topics); a typo must fail.
            "auto.create.topics.enable": "false",
            # A single replica of everything, or groups, transactions and share groups never work.
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Internal topics default to 50 partitions each; one is plenty on a laptop.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Sized for 2 cores: the defaults assume a dedicated server.
            "num.network.threads": "1",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "group.coordinator.threads": "1",
            # The cleaner's 128 MiB default dedupe buffer would be taken from a 512 MiB heap.
            "log.cleaner.dedupe.buffer.size": "2097152",
        }
        properties.update(cfg.extra_properties)
        return properties

    def _jvm_argv(self, java: str, libs: Path, heap_mb: int) -> list[str]:
        heap = f"{heap_mb}m"
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            # The stock kafka-server-start.sh flags, plus caps so the JVM does not size its
            # thread pools for more cores than a small machine has.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:ActiveProcessorCount=2",
            "-XX:ParallelGCThreads=2",
            "-XX:ConcGCThreads=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self._logs_dir}",
            # zstd and snappy unpack native libraries; /tmp may be mounted noexec.
            f"-DZstdTempFolder={self._native_tmp}",
            f"-Dorg.xerial.snappy.tempdir={self._native_tmp}",
            "-cp",
            f"{libs}/*",
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        # The cluster id is kept beside the storage so a re-format after a wiped log dir (or a
        # retry after a failed format) reuses it.
        if self._cluster_id_file.is_file():
            cluster_id = self._cluster_id_file.read_text().strip()
        else:
            cluster_id = _random_cluster_id()
            self._cluster_id_file.write_text(cluster_id + "\n")
        argv = [
            *self._jvm_argv(java, libs, heap_mb=128),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self._properties),
        ]
        for name, password in self.config.scram_credentials.items():
            argv += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise LauncherError(
                f"formatting Kafka storage in {self._log_dirs} failed:\n"
                + output_tail(done.stdout + done.stderr)
            )

    def _wait_until_ready(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        # With a fixed port the broker opens its client listener only once it can serve requests.
        deadline = time.monotonic() + timeout_s
        while True:
            code = process.poll()
            if code is not None:
                raise LauncherError(
                    f"Kafka exited with code {code} during start-up; {self._out_path} ends with:\n"
                    + self.log_tail()
                )
            if _port_accepts(self.config.port):
                return
            if time.monotonic() >= deadline:
                raise LauncherError(
                    f"Kafka did not accept connections on {self.bootstrap_servers} within "
                    f"{timeout_s:.0f}s; {self._out_path} ends with:\n" + self.log_tail()
                )
            time.sleep(0.1)


def _random_cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): URL-safe base64 of 16 random bytes, no padding, and
    # never starting with "-" (it would read as a command-line option).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _runs_broker(argv: list[str], properties: str) -> bool:
    """Whether ``argv`` is ``java ... kafka.Kafka <properties>``."""
    return any(
        arg == "kafka.Kafka" and argv[i + 1 : i + 2] == [properties] for i, arg in enumerate(argv)
    )


def _render_properties(properties: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR, as the JVM sets it, so sockets in TIME_WAIT from a previous run do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def _port_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False
