"""The short fault matrix in ``make test``: one stack, a SIGKILLed aggregator and a 3 s Kafka
pause under a small steady load, and every acknowledged event counted exactly once; then, on a
stack of its own whose PostgreSQL lives on a small tmpfs, 3 s of a full data directory (about
15 s; skipped where a tmpfs cannot be mounted).

``make faults`` runs every fault, each on a stack of its own, and writes FAULTS.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from loadtest.faults.disk import MountRefused
from loadtest.faults.matrix import faults
from loadtest.faults.run import Fault, FaultPlan, FaultResult, run_fault
from loadtest.faults.stack import FaultStack, fault_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None, reason="the local Kafka broker needs java"),
]

PLAN = FaultPlan(rate=100.0, before_s=2.0, load_s=8.0, customers=10, verify_timeout_s=30.0)


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    """Not under pytest's temporary root, which is mode 0700: PostgreSQL runs as its own
    account under root and must reach its data directory."""
    with tempfile.TemporaryDirectory(prefix="meterflow-faults-test-") as root:
        Path(root).chmod(0o755)
        with fault_stack(Path(root) / "data", Path(root) / "logs", print) as running:
            yield running


def _full_disk() -> Fault:
    """The full-disk fault whose WAL has room: a DiskFullError on every fold until space is
    freed. (The one that also runs the WAL out, a PANIC and a restart, is left to ``make
    faults``.)"""
    return next(f for f in faults(outage_s=3.0) if f.name.endswith("(the WAL segment has room)"))


@pytest.fixture
def small_disk_stack() -> Iterator[FaultStack]:
    fault = _full_disk()
    with tempfile.TemporaryDirectory(prefix="meterflow-faults-test-") as root:
        Path(root).chmod(0o755)
        try:
            with fault_stack(
                Path(root) / "data",
                Path(root) / "logs",
                print,
                postgres_disk_mb=fault.postgres_disk_mb,
            ) as running:
                yield running
        except MountRefused as exc:
            pytest.skip(f"the full-disk fault is skipped here: {exc}")


def _assert_exact(result: FaultResult) -> None:
    assert result.lost == 0, result.as_dict()
    assert result.doubled == 0, result.as_dict()
    assert result.unresolved == 0, result.as_dict()
    assert result.verified, result.as_dict()
    assert result.accepted > 0
    assert result.recovery_s is not None, "the stack did not recover"
    assert set(result.refused) <= {"503", "no answer (connection error or timeout)"}


def _short_faults() -> list[Fault]:
    kill_aggregator = next(f for f in faults() if f.name == "SIGKILL aggregator")
    return [
        kill_aggregator,
        Fault("Kafka paused 3 s", partial(FaultStack.pause_kafka, seconds=3.0)),
    ]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", _short_faults(), ids=lambda f: f.name)
async def test_fault_loses_and_doubles_nothing(stack: FaultStack, fault: Fault) -> None:
    _assert_exact(await run_fault(stack, fault, PLAN))


@pytest.mark.timeout(90)
async def test_a_full_data_directory_loses_and_doubles_nothing(
    small_disk_stack: FaultStack,
) -> None:
    result = await run_fault(small_disk_stack, _full_disk(), PLAN)
    _assert_exact(result)
    assert not any("logged no 'No space left" in note for note in result.notes), result.notes
