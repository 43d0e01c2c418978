"""``GET /v1/billing/meters/:id/event_summaries``: usage per customer over minute-aligned ranges."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params, missing_param
from ingest.edge.routing import Route
from ingest.meters.store import MeterStore
from meterflow.meters import Meter
from meterflow.receipt import receipt_order
from meterflow.windows import MINUTE_S, WINDOW_S, TimeWindow

_ORDER_LAST = receipt_order("last_", latest_first=True)


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


def aggregated(formula: str, row: asyncpg.Record | None) -> float:
    if row is None:
        return 0.0
    value: Decimal | None
    if formula == "sum":
        value = row["value_sum"]
    elif formula == "count":
        value = Decimal(row["event_count"])
    else:
        value = row["last_value"]
    return float(value) if value is not None else 0.0


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
        row = await self._pool.fetchrow(
            f"""SELECT sum(value_sum) AS value_sum, sum(event_count) AS event_count,
                       (array_agg(last_value ORDER BY {_ORDER_LAST}))[1] AS last_value
                FROM rollups_minute
                WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
                  AND minute_ts >= $5 AND minute_ts < $6""",
            who.account_id,
            who.livemode,
            meter.id,
            q.customer,
            q.start_time,
            q.end_time,
        )
        if row is not None and row["event_count"] is None:
            row = None
        value = aggregated(meter.formula, row)
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
        rows = await self._pool.fetch(
            f"""SELECT minute_ts - minute_ts % $7 AS bucket,
                       sum(value_sum) AS value_sum, sum(event_count) AS event_count,
                       (array_agg(last_value ORDER BY {_ORDER_LAST}))[1] AS last_value
                FROM rollups_minute
                WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
                  AND minute_ts >= $5 AND minute_ts < $6
                GROUP BY bucket ORDER BY bucket {"ASC" if backwards else "DESC"} LIMIT $8""",
            who.account_id,
            who.livemode,
            meter.id,
            q.customer,
            low,
            high,
            window_s,
            q.limit + 1,
        )
        page = rows[: q.limit]
        if backwards:
            page = list(reversed(page))
        data = [
            self._summary(
                who,
                meter,
                customer=q.customer,
                start=r["bucket"],
                end=r["bucket"] + window_s,
                value=aggregated(meter.formula, r),
            )
            for r in page
        ]
        return data, len(rows) > q.limit
