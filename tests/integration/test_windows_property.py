"""Random histories through the real pipeline agree with the reference model of meters.

HTTP ingest -> Kafka -> aggregator -> PostgreSQL -> summaries API, for raw, hourly and daily
meters with every formula, v1 and v2 events, duplicates and cancels; some batches restart the
aggregator (gracefully or abruptly) or redeliver Kafka records while histories are in flight.
Every minute-aligned range and every hourly and daily page must match
:class:`tests.model.windows.Model`.

Each hypothesis example is a batch of histories, one account each, run concurrently and then all
checked, so a few examples cover hundreds of histories. The examples are derandomized: every run
checks the same histories, so a failure reproduces on the next run; raise ``BATCHES`` locally to
explore further. Shrinking is off, since each attempt replays a whole batch through Kafka; the
report prints the shortest failing histories in full, as generated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings

from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.history_driver import HistoryRun, span_start
from tests.fixtures.meter_events import rollups_disagreeing_with_minutes, wait_until
from tests.fixtures.meter_events_topic import MeterEventsReader
from tests.fixtures.meter_histories import (
    DAY_S,
    Batch,
    CancelOp,
    History,
    MeterPlan,
    SendOp,
    batches,
)
from tests.fixtures.redelivery import TopicLog
from tests.fixtures.restartable_aggregator import RestartableAggregator

# About 35 s on 2 cores; the timeout leaves room for a loaded CI machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

T = TypeVar("T")

HISTORIES_PER_BATCH = 25
BATCHES = 9  # 225 generated histories per run, plus the explicit example
FOLD_DEADLINE_S = 60.0
REDELIVER_MIDWAY_SHARE = 0.5
REDELIVER_AT_END_SHARE = 0.3
REPORTED_FAILURES = 3

PROPERTY_SETTINGS = settings(
    max_examples=BATCHES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the pipeline is shared; each history has an account
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@dataclass(frozen=True)
class Pipeline:
    aggregator: RestartableAggregator
    log: TopicLog
    database_url: str


@pytest.fixture
async def pipeline(
    ingest_url: str,
    ingest_settings: Settings,
    kafka_bootstrap: str,
    topic_prefix: str,
    database_url: str,
) -> AsyncIterator[Pipeline]:
    settings = ingest_settings.with_overrides(consumer_group=f"g-{topic_prefix}")
    async with (
        RestartableAggregator(settings) as aggregator,
        MeterEventsReader(kafka_bootstrap, topic_prefix) as reader,
    ):
        yield Pipeline(aggregator, TopicLog(reader, kafka_bootstrap), database_url)


def _hour(day: int, clock: str) -> int:
    hours, minutes = (int(p) for p in clock.split(":"))
    return day * DAY_S + hours * 3600 + minutes * 60


def _send(identifier: str, meter: int, value: str, at: int, *, resend: bool = False) -> SendOp:
    return SendOp(identifier, meter, 0, value, at, v2=identifier.endswith("2"), resend=resend)


# The README's worked example on an hourly `sum` meter, the same sequence on an hourly `last`
# and a daily `count` meter, with an abrupt restart and redelivery after the first cancel.
_WORKED = tuple(
    op
    for meter, prefix in ((0, "s"), (1, "l"), (2, "c"))
    for op in (
        _send(f"{prefix}1", meter, "5", _hour(1, "12:10")),
        _send(f"{prefix}2", meter, "7", _hour(1, "12:50")),
        _send(f"{prefix}3", meter, "3", _hour(1, "12:05")),
        _send(f"{prefix}2", meter, "100", _hour(1, "12:59"), resend=True),
        _send(f"{prefix}4", meter, "4", _hour(1, "13:20")),
        CancelOp(f"{prefix}3", v2=False),
        CancelOp(f"{prefix}1", v2=True),
        CancelOp(f"{prefix}1", v2=False),
    )
)
WORKED_EXAMPLE = Batch(
    histories=(
        History(
            meters=(MeterPlan("sum", "hour"), MeterPlan("last", "hour"), MeterPlan("count", "day")),
            customers=("cus_A",),
            ops=_WORKED,
            split=6,
            ranges=((_hour(1, "12:00"), _hour(1, "12:30")), (_hour(1, "12:30"), _hour(1, "14:00"))),
            page_limit=1,
        ),
    ),
    restart="abrupt",
    redeliver=True,
    seed=7,
)


async def _each(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; at the first failure, cancel the others and raise that failure."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def run_batch(
    batch: Batch, http: httpx.AsyncClient, make_account: AccountFactory, pipeline: Pipeline
) -> None:
    """Run every history of ``batch`` in its own account, then compare all summaries."""
    base_s = span_start(time.time())
    accounts = [await make_account(f"history {n}") for n in range(len(batch.histories))]
    runs = [
        HistoryRun(http, account.secret_key, history, base_s)
        for account, history in zip(accounts, batch.histories, strict=True)
    ]
    account_ids = {account.account_id for account in accounts}
    rng = random.Random(batch.seed)
    await _each(run.setup() for run in runs)
    await _each(run.run(run.history.ops[: run.history.split]) for run in runs)

    async def disrupt() -> None:
        if batch.restart != "none":
            await pipeline.aggregator.restart(abrupt=batch.restart == "abrupt")
            event(f"aggregator restart: {batch.restart}")
        if batch.redeliver:
            await pipeline.log.redeliver(rng, REDELIVER_MIDWAY_SHARE, account_ids)

    await _each([disrupt(), *(run.run(run.history.ops[run.history.split :]) for run in runs)])
    if batch.redeliver:
        again = await pipeline.log.redeliver(rng, REDELIVER_AT_END_SHARE, account_ids)
        event("records redelivered" if again else "redelivery picked no record")

    async def folded() -> bool:
        return await pipeline.log.all_folded(pipeline.database_url)

    await wait_until(folded, FOLD_DEADLINE_S, "every record on the topic to be folded")
    found = await _each(run.mismatches() for run in runs)
    failures = sorted(
        ((run, wrong) for run, wrong in zip(runs, found, strict=True) if wrong),
        key=lambda failure: len(failure[0].history.ops),
    )
    assert not failures, _report(batch, len(runs), failures)
    assert await rollups_disagreeing_with_minutes(pipeline.database_url) == []


def _report(batch: Batch, total: int, failures: list[tuple[HistoryRun, list[str]]]) -> str:
    lines = [f"{len(failures)} of {total} histories disagree with the model ({batch.describe()})"]
    for run, wrong in failures[:REPORTED_FAILURES]:
        lines += ["", "history:", run.history.render(), "mismatches:", *wrong]
    return "\n".join(lines)


@PROPERTY_SETTINGS
@given(batch=batches(HISTORIES_PER_BATCH))
@example(batch=WORKED_EXAMPLE)
async def test_histories_match_the_model(
    batch: Batch, http: httpx.AsyncClient, make_account: AccountFactory, pipeline: Pipeline
) -> None:
    await run_batch(batch, http, make_account, pipeline)
