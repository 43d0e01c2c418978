"""``GET /v1/billing/meters/:id/event_summaries``: usage per customer over minute-aligned ranges,
read through :mod:`meterflow.usage.reader`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params, missing_param
from ingest.edge.routing import Route
from ingest.meters.store import MeterStore
from meterflow.meters import Meter
from meterflow.usage.reader import usage_buckets, usage_total
from meterflow.windows import MINUTE_S, WINDOW_S, TimeWindow


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    customer: str
    start_time: int
    end_time: int
    window_s: int | None
    limit: int
    starting_after: int | None  # bucket start decoded from a summary id
    ending_before: int | None


def summary_id(meter_id: str, customer: str, start: int, end: int) -> str:
    packed = base64.urlsafe_b64encode(struct.pack(">qq", start, end)).decode().rstrip("=")
    scope = hashlib.sha256(f"{meter_id}\x00{customer}".encode()).hexdigest()[:10]
    return f"mtrusg_{packed}{scope}"


def bucket_start_of(summary: str, param: str) -> int:
    """The window start encoded in a summary id, for pagination cursors."""
    invalid = InvalidRequest(
        f"Invalid {param}: {summary[:60]!r} is not a summary id.",
        code="parameter_invalid",
        param=param,
    )
    if not summary.startswith("mtrusg_"):
        raise invalid
    try:
        packed = base64.urlsafe_b64decode(summary.removeprefix("mtrusg_")[:22] + "==")
        start, _end = struct.unpack(">qq", packed)
    except (binascii.Error, struct.error, ValueError) as exc:
        raise invalid from exc
    return int(start)


def _aligned(params: Params, key: str, step: int, what: str) -> int:
    value = params.integer(key)
    if value is None:
        raise missing_param(key)
    if value % step:
        raise InvalidRequest(
            f"Invalid {key}: {value} must be aligned with {what} boundaries.",
            code="parameter_invalid",
            param=key,
        )
    return value


def parse_summary_query(params: Params) -> SummaryQuery:
    """Validate the list parameters (pure)."""
    customer = params.required_string("customer", max_length=255)
    window = params.choice("value_grouping_window", tuple(WINDOW_S))
    window_s = WINDOW_S[cast(TimeWindow, window)] if window else None
    step, what = (window_s, f"{window} (UTC)") if window and window_s else (MINUTE_S, "minute")
    start = _aligned(params, "start_time", step, what)
    end = _aligned(params, "end_time", step, what)
    if end <= start:
        raise InvalidRequest(
            "Invalid end_time: must be after start_time.",
            code="parameter_invalid",
            param="end_time",
        )
    limit = params.integer("limit", minimum=1, maximum=100) or 10
    after = params.string("starting_after", max_length=255)
    before = params.string("ending_before", max_length=255)
    params.no_expansion()
    params.finish()
    if after and before:
        raise InvalidRequest(
            "You may only specify one of these parameters: ending_before, starting_after.",
            code="parameters_exclusive",
            param="ending_before",
        )
    return SummaryQuery(
        customer=customer,
        start_time=start,
        end_time=end,
        window_s=window_s,
        limit=limit,
        starting_after=bucket_start_of(after, "starting_after") if after else None,
        ending_before=bucket_start_of(before, "ending_before") if before else None,
    )


class SummariesApi:
    def __init__(self, meters: MeterStore, pool: asyncpg.Pool) -> None:
        self._meters = meters
        self._pool = pool

    def routes(self) -> list[Route]:
        return [Route("GET", "/v1/billing/meters/{id}/event_summaries", self.list_summaries)]

    async def list_summaries(self, request: Request, who: Principal) -> Response:
        meter_id = request.path_params["id"]
        query = parse_summary_query(Params(request.params()))
        meter = await self._meters.get(who, meter_id)
        if meter is None:
            raise ResourceMissing(f"No such billing.meter: '{meter_id}'")
        if query.window_s is None:
            data, has_more = [await self._whole_range(who, meter, query)], False
        else:
            data, has_more = await self._buckets(who, meter, query, query.window_s)
        return json_response(
            {
                "object": "list",
                "data": data,
                "has_more": has_more,
                "url": f"/v1/billing/meters/{meter_id}/event_summaries",
            }
        )

    def _summary(
        self, who: Principal, meter: Meter, *, customer: str, start: int, end: int, value: float
    ) -> dict[str, Any]:
        return {
            "id": summary_id(meter.id, customer, start, end),
            "object": "billing.meter_event_summary",
            "aggregated_value": value,
            "end_time": end,
            "livemode": who.livemode,
            "meter": meter.id,
            "start_time": start,
        }

    async def _whole_range(self, who: Principal, meter: Meter, q: SummaryQuery) -> dict[str, Any]:
        span = (who.account_id, who.livemode, meter.id, q.customer, q.start_time, q.end_time)
        async with self._pool.acquire() as conn:
            totals = await usage_total(conn, span)
        value = float(totals.value(meter.formula))
        return self._summary(
            who, meter, customer=q.customer, start=q.start_time, end=q.end_time, value=value
        )

    async def _buckets(
        self, who: Principal, meter: Meter, q: SummaryQuery, window_s: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Non-empty windows, newest first, paginated by summary id."""
        backwards = q.ending_before is not None
        low, high = q.start_time, q.end_time
        if q.starting_after is not None:
            high = min(high, q.starting_after)
        if q.ending_before is not None:
            low = max(low, q.ending_before + window_s)
        async with self._pool.acquire() as conn:
            buckets = await usage_buckets(
                conn,
                (who.account_id, who.livemode, meter.id, q.customer),
                start_s=low,
                end_s=high,
                bucket_s=window_s,
                limit=q.limit + 1,
                oldest_first=backwards,
            )
        page = buckets[: q.limit]
        if backwards:
            page.reverse()
        data = [
            self._summary(
                who,
                meter,
                customer=q.customer,
                start=b.start_s,
                end=b.start_s + window_s,
                value=float(b.totals.value(meter.formula)),
            )
            for b in page
        ]
        return data, len(buckets) > q.limit
