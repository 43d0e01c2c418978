"""Where ``meterflow up`` says its local services listen: ``<data dir>/stack.json``, mode 0600
(the database URL may hold a password).

``up`` writes it once PostgreSQL and Kafka answer and removes it when it stops. Every other
command (``accounts``, ``migrate``, ``maintenance``, ``config``, ...) takes from it the
connections the environment leaves unset, so it finds the local stack with nothing configured;
an explicit ``DATABASE_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` always wins. A record left by a
launcher that is no longer running is ignored.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from meterflow.settings.roles import Settings

STACK_FILE = "stack.json"


@dataclass(frozen=True, slots=True)
class LocalStack:
    """What ``meterflow up`` runs: its connections, its API, and its own pid."""

    database_url: str
    kafka_bootstrap_servers: str
    api_url: str
    pid: int


def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def write_local_stack(data_dir: Path, stack: LocalStack) -> Path:
    """Record ``stack`` atomically, readable by its owner only; returns the file's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = stack_file(data_dir)
    partial = path.with_name(f".{STACK_FILE}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask, and if the file was there before
        os.write(descriptor, orjson.dumps(asdict(stack), option=orjson.OPT_INDENT_2))
    finally:
        os.close(descriptor)
    os.replace(partial, path)
    return path


def read_local_stack(data_dir: Path) -> LocalStack | None:
    """The running local stack, or None: no record, an unreadable one, or its launcher gone."""
    try:
        fields = orjson.loads(stack_file(data_dir).read_bytes())
        stack = LocalStack(
            database_url=str(fields["database_url"]),
            kafka_bootstrap_servers=str(fields["kafka_bootstrap_servers"]),
            api_url=str(fields["api_url"]),
            pid=int(fields["pid"]),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return stack if _running(stack.pid) else None


def remove_local_stack(data_dir: Path, pid: int) -> None:
    """Remove the record if launcher ``pid`` wrote it (a newer launcher's stays)."""
    path = stack_file(data_dir)
    try:
        written_by = orjson.loads(path.read_bytes()).get("pid")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return
    if written_by == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def with_local_stack(settings: Settings, stack: LocalStack | None) -> Settings:
    """``settings`` with the connections it lacks taken from ``stack``."""
    if stack is None:
        return settings
    changes: dict[str, str] = {}
    if not settings.database_url:
        changes["database_url"] = stack.database_url
    if not settings.kafka_bootstrap_servers:
        changes["kafka_bootstrap_servers"] = stack.kafka_bootstrap_servers
    return settings.with_overrides(**changes)


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True
