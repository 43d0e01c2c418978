"""The local stack record: written 0600, found by other commands, never over explicit settings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from meterflow.settings import Settings, load_settings
from meterflow.settings.local_stack import (
    LocalStack,
    read_local_stack,
    remove_local_stack,
    stack_file,
    with_local_stack,
    write_local_stack,
)

STACK = LocalStack(
    database_url="postgresql://meterflow:pw@127.0.0.1:15432/meterflow",
    kafka_bootstrap_servers="127.0.0.1:19092",
    api_url="http://127.0.0.1:8080",
    pid=os.getpid(),
)


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_the_record_is_private_and_reads_back(tmp_path: Path) -> None:
    os.umask(0o022)
    path = write_local_stack(tmp_path / "data", STACK)
    assert path == stack_file(tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_local_stack(tmp_path / "data") == STACK
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["stack.json"]


def test_a_record_made_readable_becomes_private_again_when_rewritten(tmp_path: Path) -> None:
    path = write_local_stack(tmp_path, STACK)
    path.chmod(0o644)
    write_local_stack(tmp_path, STACK)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_record_a_broken_one_or_a_dead_launcher_means_no_stack(tmp_path: Path) -> None:
    assert read_local_stack(tmp_path) is None
    stack_file(tmp_path).write_text("{not json")
    assert read_local_stack(tmp_path) is None
    stack_file(tmp_path).write_text('{"database_url": "x"}')
    assert read_local_stack(tmp_path) is None
    write_local_stack(tmp_path, LocalStack("a", "b", "c", pid=_dead_pid()))
    assert read_local_stack(tmp_path) is None


def test_the_stack_fills_only_what_the_environment_leaves_unset() -> None:
    nothing_set = load_settings({})
    found = with_local_stack(nothing_set, STACK)
    assert found.database_url == STACK.database_url
    assert found.kafka_bootstrap_servers == STACK.kafka_bootstrap_servers

    explicit = load_settings({"DATABASE_URL": "postgresql://prod/db"})
    chosen = with_local_stack(explicit, STACK)
    assert chosen.database_url == "postgresql://prod/db"
    assert chosen.kafka_bootstrap_servers == STACK.kafka_bootstrap_servers

    both = load_settings(
        {"DATABASE_URL": "postgresql://prod/db", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    )
    assert with_local_stack(both, STACK) == both
    assert with_local_stack(nothing_set, None) == Settings()


def test_only_the_launcher_that_wrote_it_removes_it(tmp_path: Path) -> None:
    write_local_stack(tmp_path, STACK)
    remove_local_stack(tmp_path, pid=STACK.pid + 1)
    assert stack_file(tmp_path).exists()
    remove_local_stack(tmp_path, pid=STACK.pid)
    assert not stack_file(tmp_path).exists()
    remove_local_stack(tmp_path, pid=STACK.pid)  # already gone: fine
