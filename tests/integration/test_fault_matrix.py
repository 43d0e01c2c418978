"""The short fault matrix in ``make test``: one stack, a SIGKILLed aggregator and a 3 s Kafka
pause under a small steady load, and every acknowledged event counted exactly once.

``make faults`` runs every fault, each on a stack of its own, and writes FAULTS.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from loadtest.faults.matrix import faults
from loadtest.faults.run import Fault, FaultPlan, run_fault
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


def _short_faults() -> list[Fault]:
    kill_aggregator = next(f for f in faults() if f.name == "SIGKILL aggregator")
    return [
        kill_aggregator,
        Fault("Kafka paused 3 s", partial(FaultStack.pause_kafka, seconds=3.0)),
    ]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", _short_faults(), ids=lambda f: f.name)
async def test_fault_loses_and_doubles_nothing(stack: FaultStack, fault: Fault) -> None:
    result = await run_fault(stack, fault, PLAN)
    assert result.lost == 0, result.as_dict()
    assert result.doubled == 0, result.as_dict()
    assert result.unresolved == 0, result.as_dict()
    assert result.verified, result.as_dict()
    assert result.accepted > 0
    assert result.recovery_s is not None, "the stack did not recover"
    assert set(result.refused) <= {"503", "no answer (connection error or timeout)"}
