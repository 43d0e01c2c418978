"""``POST /v1/meterflow/replays`` starts a re-drive of the caller's rejected events;
``GET /v1/meterflow/replays/:id`` follows it. A meterflow extension, for operators, scoped to the
key's account and mode like every other endpoint.

Parameters (form or JSON): ``codes[]`` (asynchronous error codes, e.g. ``no_meter``), ``meter``,
``event_name``, ``rejected_at[gte]`` and ``rejected_at[lt]`` (unix seconds: when the events were
rejected). All are optional; without any, every rejected event of the account and mode still in
the topic is re-driven. One re-drive per account and mode runs at a time (409 otherwise).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import Conflict, InvalidRequest, ResourceMissing, ServiceUnavailable
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.replays.runner import ReplayRunner
from meterflow.replay.jobs import ReplayJob, ReplayRunning, find_job, start_job
from meterflow.replay.rejections import RedriveFilter
from meterflow.rules.events import MAX_EVENT_NAME
from meterflow.settings import Settings

BASE = "/v1/meterflow/replays"
MAX_CODES = 20
_MAX_ID = 255


def parse_replay(params: Params, who: Principal) -> RedriveFilter:
    codes = params.string_list("codes")
    if len(codes) > MAX_CODES:
        raise InvalidRequest(
            f"Invalid codes: at most {MAX_CODES} codes can be given.",
            code="parameter_invalid",
            param="codes",
        )
    meter = params.string("meter", max_length=_MAX_ID, printable=True)
    event_name = params.string("event_name", max_length=MAX_EVENT_NAME, printable=True)
    window = params.object("rejected_at")
    since = until = None
    if window is not None:
        since = window.integer("gte", minimum=0)
        until = window.integer("lt", minimum=0)
    params.finish()
    return RedriveFilter(
        account_id=who.account_id,
        livemode=who.livemode,
        codes=frozenset(codes),
        meter_ids=frozenset([meter] if meter else []),
        event_names=frozenset([event_name] if event_name else []),
        rejected_from_ms=None if since is None else since * 1000,
        rejected_until_ms=None if until is None else until * 1000,
    )


def replay_object(job: ReplayJob) -> dict[str, Any]:
    filters = job.filters
    return {
        "id": job.id,
        "object": "meterflow.replay",
        "type": "rejected_events",
        "livemode": job.livemode,
        "status": job.status,
        "created": job.created_ms // 1000,
        "finished_at": None if job.finished_ms is None else job.finished_ms // 1000,
        "filters": {
            "codes": filters.get("codes", []),
            "meter": next(iter(filters.get("meters", [])), None),
            "event_name": next(iter(filters.get("event_names", [])), None),
            "rejected_at": {
                "gte": _seconds(filters.get("rejected_from_ms")),
                "lt": _seconds(filters.get("rejected_until_ms")),
            },
        },
        "progress": {
            "records_read": job.progress.get("records_read", 0),
            "records_total": job.progress.get("records_total", 0),
            "rejections_matched": job.progress.get("rejections_matched", 0),
        },
        "outcomes": {
            name: job.outcomes.get(name, 0)
            for name in ("accepted", "duplicate", "rejected", "too_old")
        },
        "rejected_codes": job.rejected_codes,
        "too_old_identifiers": job.too_old,
        "failure_message": job.failure_message,
    }


def _seconds(ms: object) -> int | None:
    return ms // 1000 if isinstance(ms, int) else None


class ReplaysApi:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._runner = None if not settings.kafka_bootstrap_servers else ReplayRunner(settings)

    def routes(self) -> list[Route]:
        return [Route("POST", BASE, self.create), Route("GET", BASE + "/{id}", self.retrieve)]

    async def create(self, request: Request, who: Principal) -> Response:
        selection = parse_replay(Params(request.params()), who)
        if self._runner is None:
            raise ServiceUnavailable(
                "This meterflow process has no Kafka configured (KAFKA_BOOTSTRAP_SERVERS), so it "
                "cannot replay events.",
                headers={"Retry-After": "1"},
            )
        async with self._pool.acquire() as conn:
            try:
                job = await start_job(conn, selection, _now_ms())
            except ReplayRunning as exc:
                raise Conflict(
                    f"Replay {exc.args[0]} of this account and mode is still running; follow it "
                    f"with GET {BASE}/{exc.args[0]} and start another once it has finished.",
                    code="replay_in_progress",
                ) from exc
        self._runner.start(job.id, selection)
        return json_response(replay_object(job))

    async def retrieve(self, request: Request, who: Principal) -> Response:
        Params(request.params()).finish()
        replay_id = request.path_params["id"]
        async with self._pool.acquire() as conn:
            job = await find_job(conn, replay_id, who.account_id, who.livemode, _now_ms())
        if job is None:
            raise ResourceMissing(f"No such replay: '{replay_id}'")
        return json_response(replay_object(job))


def _now_ms() -> int:
    return int(time.time() * 1000)
