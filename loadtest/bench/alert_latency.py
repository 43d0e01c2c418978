"""Alert notification latency: from sending the event that crosses a threshold to the
``billing.alert.triggered`` event on the events topic.

One probe account has a raw ``count`` meter and one ``one_time`` alert with ``gte=1`` and no
customer filter, so every new customer's first event crosses it. Probers send one v2 event per
fresh customer and note the wall-clock time just before sending; a consumer of the events topic
matches each notification to its customer and takes the record's broker append time
(``LogAppendTime``) as the moment it reached the topic. Latency therefore includes the HTTP
request, Kafka, the fold, the usage-change relay, evaluation and publishing, and runs while the
caller drives background load.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from loadtest.client import HttpClient
from loadtest.latency import LatencyHistogram
from loadtest.plan import AccountPlan
from loadtest.traffic import PlannedEvent
from loadtest.wire import RequestEncoder, host_and_port
from meterflow.kafka.topics import v1_events_topic

_NOTIFIED_TIMEOUT_S = 20.0
_ALERTS = "/v1/billing/alerts"


async def create_probe_alert(base_url: str, account: AccountPlan) -> str:
    """A ``one_time`` alert at 1 on the account's first meter, for every customer."""
    encoder = RequestEncoder(base_url)
    host, port = host_and_port(base_url)
    client = HttpClient(host, port)
    try:
        response = await client.request(
            encoder.form(
                _ALERTS,
                account.secret_key,
                [
                    ("alert_type", "usage_threshold"),
                    ("title", "bench probe"),
                    ("usage_threshold[gte]", "1"),
                    ("usage_threshold[meter]", account.meters[0].meter_id),
                    ("usage_threshold[recurrence]", "one_time"),
                ],
            )
        )
    finally:
        client.close()
    document = response.json()
    if response.status != 200 or not isinstance(document, dict):
        raise RuntimeError(f"cannot create the probe alert: {response.status} {document!r}")
    return str(document["id"])


class TriggeredNotifications:
    """Append times (ms) of alert notifications per customer, read from the events topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", enable_auto_commit=False
        )
        self.appended_ms: dict[str, int] = {}
        self.records = 0
        self.arrived = asyncio.Event()  # set whenever a new customer's notification arrives
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        # Resolve "latest" now, before any probe is sent, so no notification is skipped.
        await self._consumer.seek_to_end()
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    self.records += 1
                    if record.value is None:
                        continue
                    event = orjson.loads(record.value)
                    if event.get("type") == "billing.alert.triggered":
                        customer = event["data"]["object"]["customer"]
                        if customer not in self.appended_ms:
                            self.appended_ms[customer] = record.timestamp
                            self.arrived.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def _probe_loop(
    base_url: str,
    account: AccountPlan,
    prober: int,
    *,
    until: float,
    interval_s: float,
    sent_ms: dict[str, int],
    budget: list[int],
) -> int:
    encoder = RequestEncoder(base_url)
    host, port = host_and_port(base_url)
    client = HttpClient(host, port)
    meter = account.meters[0]
    failures = 0
    n = 0
    try:
        while time.time() < until and budget[0] > 0:
            budget[0] -= 1
            n += 1
            customer = f"cus_alert{prober:02d}x{n:05d}"
            event = PlannedEvent(
                "new", 0, meter.event_name, customer, "1", int(time.time()), customer
            )
            started_ms = int(time.time() * 1000)
            response = await client.request(encoder.v2_event(account.secret_key, event))
            if response.status == 200:
                sent_ms[customer] = started_ms
            else:
                failures += 1
            await asyncio.sleep(interval_s)
    finally:
        client.close()
    return failures


async def measure_alert_latency(
    base_url: str,
    bootstrap: str,
    topic_prefix: str,
    account: AccountPlan,
    *,
    probers: int,
    duration_s: float,
    max_probes: int,
    interval_s: float,
) -> dict[str, Any]:
    """``account.meters[0]`` must be a raw ``count`` meter; the caller runs background load."""
    alert_id = await create_probe_alert(base_url, account)
    notifications = TriggeredNotifications(bootstrap, v1_events_topic(topic_prefix))
    await notifications.start()
    sent_ms: dict[str, int] = {}
    budget = [max_probes]
    try:
        until = time.time() + duration_s
        failures = await asyncio.gather(
            *(
                _probe_loop(
                    base_url,
                    account,
                    n,
                    until=until,
                    interval_s=interval_s,
                    sent_ms=sent_ms,
                    budget=budget,
                )
                for n in range(probers)
            )
        )
        deadline = time.monotonic() + _NOTIFIED_TIMEOUT_S
        while True:
            notifications.arrived.clear()  # before the check: an arrival after it sets it again
            if set(sent_ms) <= set(notifications.appended_ms):
                break
            try:
                await asyncio.wait_for(
                    notifications.arrived.wait(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                break
    finally:
        await notifications.stop()
    latency = LatencyHistogram()
    for customer, started in sent_ms.items():
        appended = notifications.appended_ms.get(customer)
        if appended is not None:
            latency.record_s(max(0, appended - started) / 1000)
    missing = sorted(set(sent_ms) - set(notifications.appended_ms))
    return {
        "alert": alert_id,
        "probes": len(sent_ms),
        "notified": latency.count,
        "missing": len(missing),
        "missing_sample": missing[:5],
        "failed_sends": sum(failures),
        "latency_ms": latency.summary_ms(),
    }
