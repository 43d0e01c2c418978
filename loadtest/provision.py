"""Setting a run up: accounts and keys in PostgreSQL, meters through the API."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from loadtest.client import HttpClient
from loadtest.plan import (
    AccountPlan,
    MeterCounts,
    MeterPlan,
    RunSetup,
    meter_event_name,
    meter_shapes,
)
from loadtest.traffic import CUSTOMER_KEY, VALUE_KEY
from loadtest.wire import METERS, RequestEncoder, host_and_port
from meterflow.errors import MeterflowError
from meterflow.meters import Formula
from meterflow.store.accounts import NewAccount, create_account
from meterflow.windows import TimeWindow as Window


class ProvisioningFailed(MeterflowError):
    """The API refused to create a meter."""


async def create_accounts(database_url: str, count: int, run_id: str) -> list[NewAccount]:
    """``count`` fresh test-mode accounts, each with a secret key."""
    conn = await asyncpg.connect(database_url)
    try:
        return [await create_account(conn, f"loadtest-{run_id}-{n}") for n in range(count)]
    finally:
        await conn.close()


async def create_meter(
    client: HttpClient, encoder: RequestEncoder, key: str, plan: MeterPlan
) -> str:
    params = [
        ("display_name", f"loadtest {plan.event_name}"),
        ("event_name", plan.event_name),
        ("default_aggregation[formula]", plan.formula),
        ("customer_mapping[event_payload_key]", CUSTOMER_KEY),
        ("customer_mapping[type]", "by_id"),
        ("value_settings[event_payload_key]", VALUE_KEY),
    ]
    if plan.window is not None:
        params.append(("event_time_window", plan.window))
    response = await client.request(encoder.form(METERS, key, params))
    document = response.json() if response.status == 200 else None
    meter_id = document.get("id") if isinstance(document, dict) else None
    if not isinstance(meter_id, str):
        raise ProvisioningFailed(
            f"creating meter {plan.event_name} answered {response.status}: "
            f"{response.body[:300].decode(errors='replace')}"
        )
    return meter_id


async def provision(
    base_url: str,
    keys: Sequence[str],
    shapes: Sequence[tuple[Formula, Window | None]],
    customers: int,
    run_id: str,
) -> RunSetup:
    """Create meters of these shapes in every account (event names carry the run id)."""
    host, port = host_and_port(base_url)
    client = HttpClient(host, port)
    encoder = RequestEncoder(base_url)
    accounts = []
    try:
        for n, key in enumerate(keys):
            plans = []
            for index, (formula, window) in enumerate(shapes):
                plan = MeterPlan(meter_event_name(run_id, index, formula, window), formula, window)
                meter_id = await create_meter(client, encoder, key, plan)
                plans.append(MeterPlan(plan.event_name, formula, window, meter_id))
            accounts.append(AccountPlan(f"account-{n}", key, tuple(plans)))
    finally:
        client.close()
    return RunSetup(run_id=run_id, base_url=base_url, accounts=tuple(accounts), customers=customers)


def noop_setup(base_url: str, run_id: str, customers: int) -> RunSetup:
    """A setup for the no-op target: nothing to create, nothing to verify."""
    plans = tuple(
        MeterPlan(meter_event_name(run_id, i, formula, window), formula, window, f"mtr_noop{i}")
        for i, (formula, window) in enumerate(meter_shapes(MeterCounts()))
    )
    account = AccountPlan("noop", "sk_test_noop", plans)
    return RunSetup(run_id=run_id, base_url=base_url, accounts=(account,), customers=customers)
