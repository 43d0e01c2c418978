"""Credit balance alert latency: from the acceptance of the event that takes a customer's available
credit balance down to an alert's value, to the ``billing.alert.triggered`` event on the events
topic.

One probe account has a ``sum`` meter billed at 1 cent per unit. Before the clock starts, every
probe gets its own customer, subscribed to that price, with a 1,000-cent grant for metered prices
and a credit balance alert at 500 cents; the setup waits until the evaluator has checked every new
alert (none fires: 1,000 is above 500). Probers then send one v2 event worth 600 cents per
customer, leaving 400: each crosses once. The latency runs from the moment the 200 arrived (the
event is on Kafka then) to the notification's broker append time (``LogAppendTime``); it includes
the fold, the usage-change relay, reading the live balance (the grants, the open period's usage),
the firing's transaction and publishing, and runs while the caller drives background load.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from loadtest.bench.alert_latency import TriggeredNotifications
from loadtest.bench.api import BenchApi
from loadtest.client import HttpClient
from loadtest.latency import LatencyHistogram
from loadtest.traffic import PlannedEvent
from loadtest.wire import RequestEncoder, host_and_port
from meterflow.kafka.topics import v1_events_topic
from meterflow.store.accounts import NewAccount

EVENT_NAME = "credit_probe"
GRANT_CENTS = 1000
ALERT_CENTS = 500
CROSSING_CENTS = 600  # leaves 400: at or below the alert's value
_NOTIFIED_TIMEOUT_S = 20.0
_PROVISIONERS = 8
_EVALUATED_TIMEOUT_S = 60.0


async def _price(api: BenchApi) -> str:
    meter = await api.post(
        "/v1/billing/meters",
        {
            "display_name": "credit probe",
            "event_name": EVENT_NAME,
            "default_aggregation[formula]": "sum",
        },
    )
    price = await api.post(
        "/v1/prices",
        {
            "currency": "usd",
            "unit_amount": "1",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": meter["id"],
            "product_data[name]": "credit probe",
        },
    )
    return str(price["id"])


async def _probe_customer(api: BenchApi, price: str, n: int) -> str:
    """A customer on ``price`` with a grant, and a credit balance alert below it."""
    customer = str((await api.post("/v1/customers", {"name": f"credit probe {n}"}))["id"])
    await api.post("/v1/subscriptions", {"customer": customer, "items[0][price]": price})
    await api.post(
        "/v1/billing/credit_grants",
        {
            "customer": customer,
            "amount[type]": "monetary",
            "amount[monetary][currency]": "usd",
            "amount[monetary][value]": str(GRANT_CENTS),
            "applicability_config[scope][price_type]": "metered",
        },
    )
    await api.post(
        "/v1/billing/alerts",
        {
            "alert_type": "credit_balance_threshold",
            "title": "bench credit probe",
            "credit_balance_threshold[lte][balance_type]": "monetary",
            "credit_balance_threshold[lte][monetary][currency]": "usd",
            "credit_balance_threshold[lte][monetary][value]": str(ALERT_CENTS),
            "credit_balance_threshold[filters][0][type]": "customer",
            "credit_balance_threshold[filters][0][customer]": customer,
        },
    )
    return customer


async def provision_probes(base_url: str, account: NewAccount, probes: int) -> list[str]:
    """The probe customers, made ``_PROVISIONERS`` at a time."""
    api = BenchApi(base_url, account.secret_key)
    try:
        price = await _price(api)
        customers: list[str] = []
        for start in range(0, probes, _PROVISIONERS):
            batch = range(start, min(probes, start + _PROVISIONERS))
            customers += await asyncio.gather(*(_probe_customer(api, price, n) for n in batch))
        return customers
    finally:
        await api.close()


async def _wait_evaluated(database_url: str, account_id: str) -> int:
    """Until the evaluator has checked every new alert (the rechecks their creation queued);
    returns how many of the account's alerts fired meanwhile (0 unless something is wrong)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + _EVALUATED_TIMEOUT_S
        while await conn.fetchval(
            "SELECT count(*) FROM credit_alert_rechecks WHERE account_id = $1 AND due_s = 0",
            account_id,
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the evaluator did not check the new credit alerts in time")
            await asyncio.sleep(0.1)
        fired: int = await conn.fetchval(
            """SELECT count(*) FROM alert_firings f JOIN billing_alerts a ON a.id = f.alert_id
               WHERE a.account_id = $1""",
            account_id,
        )
        return fired
    finally:
        await conn.close()


async def _probe_loop(
    base_url: str,
    key: str,
    customers: list[str],
    *,
    until: float,
    interval_s: float,
    accepted_ms: dict[str, int],
    sent_ms: dict[str, int],
) -> int:
    encoder = RequestEncoder(base_url)
    host, port = host_and_port(base_url)
    client = HttpClient(host, port)
    failures = 0
    try:
        while time.time() < until and customers:
            customer = customers.pop()
            event = PlannedEvent(
                "new", 0, EVENT_NAME, customer, str(CROSSING_CENTS), int(time.time()), customer
            )
            started_ms = int(time.time() * 1000)
            response = await client.request(encoder.v2_event(key, event))
            if response.status == 200:
                accepted_ms[customer] = int(time.time() * 1000)
                sent_ms[customer] = started_ms
            else:
                failures += 1
            await asyncio.sleep(interval_s)
    finally:
        client.close()
    return failures


async def _notified(notifications: TriggeredNotifications, expected: set[str]) -> None:
    deadline = time.monotonic() + _NOTIFIED_TIMEOUT_S
    while True:
        notifications.arrived.clear()  # before the check: an arrival after it sets it again
        if expected <= set(notifications.appended_ms):
            return
        try:
            await asyncio.wait_for(
                notifications.arrived.wait(), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            return


async def measure_credit_alert_latency(
    base_url: str,
    database_url: str,
    bootstrap: str,
    topic_prefix: str,
    *,
    account: NewAccount,
    customers: list[str],
    probers: int,
    duration_s: float,
    interval_s: float,
) -> dict[str, Any]:
    """Probe the ``customers`` of :func:`provision_probes`; the caller runs background load."""
    fired_before = await _wait_evaluated(database_url, account.account_id)
    notifications = TriggeredNotifications(bootstrap, v1_events_topic(topic_prefix))
    await notifications.start()
    accepted_ms: dict[str, int] = {}
    sent_ms: dict[str, int] = {}
    unprobed = list(customers)
    try:
        until = time.time() + duration_s
        failures = await asyncio.gather(
            *(
                _probe_loop(
                    base_url,
                    account.secret_key,
                    unprobed,
                    until=until,
                    interval_s=interval_s,
                    accepted_ms=accepted_ms,
                    sent_ms=sent_ms,
                )
                for _ in range(probers)
            )
        )
        await _notified(notifications, set(accepted_ms))
    finally:
        await notifications.stop()
    from_acceptance, from_send = LatencyHistogram(), LatencyHistogram()
    for customer, accepted in accepted_ms.items():
        appended = notifications.appended_ms.get(customer)
        if appended is not None:
            from_acceptance.record_s(max(0, appended - accepted) / 1000)
            from_send.record_s(max(0, appended - sent_ms[customer]) / 1000)
    missing = sorted(set(accepted_ms) - set(notifications.appended_ms))
    return {
        "probes": len(accepted_ms),
        "provisioned": len(customers),
        "fired_before_crossing": fired_before,
        "notified": from_acceptance.count,
        "missing": len(missing),
        "missing_sample": missing[:5],
        "failed_sends": sum(failures),
        "latency_ms": from_acceptance.summary_ms(),
        "from_send_ms": from_send.summary_ms(),
    }
