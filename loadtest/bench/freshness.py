"""Freshness: from an event's 200 to the moment the summaries show it.

Each prober owns one customer on a raw ``count`` meter: it sends one v2 event, then reads that
customer's summary every ``poll_s`` until the count includes it. The figure is therefore at most
one poll interval (plus one summary request) late.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest.client import HttpClient
from loadtest.latency import LatencyHistogram
from loadtest.plan import AccountPlan
from loadtest.traffic import PlannedEvent
from loadtest.verify import summary_range
from loadtest.wire import METERS, RequestEncoder, host_and_port

_VISIBLE_TIMEOUT_S = 15.0


@dataclass(slots=True)
class _Probes:
    freshness: LatencyHistogram = field(default_factory=LatencyHistogram)
    acknowledged: LatencyHistogram = field(default_factory=LatencyHistogram)
    timeouts: int = 0
    failures: int = 0


async def _probe_loop(
    base_url: str,
    account: AccountPlan,
    customer: str,
    *,
    until: float,
    poll_s: float,
    probes: _Probes,
    budget: list[int],
) -> None:
    meter = account.meters[0]
    encoder = RequestEncoder(base_url)
    host, port = host_and_port(base_url)
    client = HttpClient(host, port)
    start, end = summary_range(time.time())
    summary = encoder.get(
        f"{METERS}/{meter.meter_id}/event_summaries",
        account.secret_key,
        {"customer": customer, "start_time": start, "end_time": end},
    )
    sent = 0
    try:
        while time.time() < until and budget[0] > 0:
            budget[0] -= 1
            sent += 1
            event = PlannedEvent(
                "new", 0, meter.event_name, customer, "1", int(time.time()), f"{customer}-{sent}"
            )
            before = time.perf_counter()
            response = await client.request(encoder.v2_event(account.secret_key, event))
            acknowledged = time.perf_counter()
            if response.status != 200:
                probes.failures += 1
                sent -= 1
                continue
            probes.acknowledged.record_s(acknowledged - before)
            while True:
                document = (await client.request(summary)).json()
                assert isinstance(document, dict)  # noqa: S101 - a summary list
                if document["data"][0]["aggregated_value"] >= sent:
                    probes.freshness.record_s(time.perf_counter() - acknowledged)
                    break
                if time.perf_counter() - acknowledged > _VISIBLE_TIMEOUT_S:
                    probes.timeouts += 1
                    break
                await asyncio.sleep(poll_s)
    finally:
        client.close()


async def measure_freshness(
    base_url: str,
    account: AccountPlan,
    *,
    probers: int,
    duration_s: float,
    max_probes: int,
    poll_s: float,
) -> dict[str, Any]:
    """``account.meters[0]`` must be a raw ``count`` meter."""
    if account.meters[0].formula != "count" or account.meters[0].window is not None:
        raise ValueError("freshness probes need a raw count meter first")
    probes = _Probes()
    budget = [max_probes]
    until = time.time() + duration_s
    await asyncio.gather(
        *(
            _probe_loop(
                base_url,
                account,
                f"cus_fresh{n:03d}",
                until=until,
                poll_s=poll_s,
                probes=probes,
                budget=budget,
            )
            for n in range(probers)
        )
    )
    return {
        "probes": probes.freshness.count,
        "probers": probers,
        "poll_interval_ms": round(poll_s * 1000, 1),
        "timeouts": probes.timeouts,
        "failed_sends": probes.failures,
        "freshness_ms": probes.freshness.summary_ms(),
        "ack_latency_ms": probes.acknowledged.summary_ms(),
    }
