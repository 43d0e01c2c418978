"""Idempotency keys without a database: fingerprints, what is kept, what a held key answers, and
the request path against an in-memory store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from aggregator.maintenance.retention import IDEMPOTENCY_KEY_RETENTION_MS
from ingest.edge.auth import Principal
from ingest.edge.errors import ApiError, InvalidRequest, ServiceUnavailable
from ingest.edge.http import Request, Response, error_response, json_response
from ingest.edge.idempotency import (
    KEY_LIFETIME_MS,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotentRequests,
    RequestPrint,
    StoredKey,
    StoredResponse,
    fingerprint,
    idempotency_key,
    keeps_outcome,
    replay,
    replayable,
    request_print,
)
from ingest.edge.metrics import IdempotencyMetrics

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
WHO = Principal("acct_1", livemode=False)


def _request(
    body: bytes = b"",
    *,
    content_type: str = FORM,
    path: str = "/v1/billing/meter_events",
    method: str = "POST",
    key: str | None = "k-1",
    request_id: str = "req_1",
) -> Request:
    headers = {"content-type": content_type}
    if key is not None:
        headers["idempotency-key"] = key
    return Request(method, path, b"", headers, body, request_id)


# -- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_ignores_parameter_order_at_every_level() -> None:
    one = fingerprint("POST", "/p", {"a": "1", "payload": {"x": "1", "y": "2"}})
    two = fingerprint("POST", "/p", {"payload": {"y": "2", "x": "1"}, "a": "1"})
    assert one == two
    assert len(one) == 32


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", "/p", {"a": "2", "payload": {"x": "1", "y": "2"}}),
        ("POST", "/p", {"a": "1", "payload": {"x": "1"}}),
        ("POST", "/q", {"a": "1", "payload": {"x": "1", "y": "2"}}),
        ("PUT", "/p", {"a": "1", "payload": {"x": "1", "y": "2"}}),
        ("POST", "/p", {"a": 1, "payload": {"x": "1", "y": "2"}}),
    ],
)
def test_fingerprint_tells_different_requests_apart(
    method: str, path: str, params: dict[str, object]
) -> None:
    base = fingerprint("POST", "/p", {"a": "1", "payload": {"x": "1", "y": "2"}})
    assert fingerprint(method, path, params) != base


def test_a_form_and_a_json_body_with_the_same_parameters_are_the_same_request() -> None:
    form = _request(b"event_name=e&payload[value]=3&payload[stripe_customer_id]=c")
    as_json = _request(
        b'{"payload": {"stripe_customer_id": "c", "value": "3"}, "event_name": "e"}',
        content_type=JSON,
    )
    assert request_print(form) == request_print(as_json)
    assert request_print(form) != request_print(_request(b"event_name=e&payload[value]=4"))


def test_an_undecodable_body_is_fingerprinted_by_its_bytes() -> None:
    broken = _request(b"{not json", content_type=JSON)
    assert request_print(broken) == request_print(_request(b"{not json", content_type=JSON))
    assert request_print(broken) != request_print(_request(b"{not jsox", content_type=JSON))
    assert request_print(broken).method == "POST"


# -- the header ------------------------------------------------------------------------------


def test_key_is_absent_without_the_header_or_with_an_empty_one() -> None:
    assert idempotency_key(_request(key=None)) is None
    assert idempotency_key(_request(key="")) is None
    assert idempotency_key(_request(key="x" * 255)) == "x" * 255


def test_a_key_longer_than_255_characters_is_a_400_naming_the_header() -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key") as raised:
        idempotency_key(_request(key="x" * 256))
    assert raised.value.status == 400
    assert raised.value.error_type == "invalid_request_error"


# -- what is kept and what a held key answers ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kept"),
    [(200, True), (201, True), (400, True), (404, True), (401, False), (409, False),
     (429, False), (500, False), (503, False)],
)  # fmt: skip
def test_only_final_outcomes_are_kept(status: int, kept: bool) -> None:
    assert keeps_outcome(status) is kept


FIRST = RequestPrint("POST", "/v1/billing/meter_events", b"f" * 32)
DONE = StoredResponse(200, b"application/json", ((b"x-h", b"v"),), b'{"ok":true}')


def test_same_request_after_completion_replays_the_response() -> None:
    assert replayable(StoredKey(FIRST, "req_0", DONE), FIRST, "k") is DONE


def test_other_parameters_under_a_key_are_an_idempotency_error() -> None:
    other = RequestPrint(FIRST.method, FIRST.path, b"g" * 32)
    with pytest.raises(IdempotencyKeyReused, match="different parameters") as raised:
        replayable(StoredKey(FIRST, "req_0", DONE), other, "k")
    assert (raised.value.status, raised.value.error_type) == (400, "idempotency_error")
    assert raised.value.body() == {
        "error": {"type": "idempotency_error", "message": str(raised.value)}
    }


def test_another_endpoint_under_a_key_is_an_idempotency_error_naming_both() -> None:
    other = RequestPrint("POST", "/v1/billing/meters", FIRST.fingerprint)
    with pytest.raises(IdempotencyKeyReused, match="/v1/billing/meter_events, not for POST /v1/"):
        replayable(StoredKey(FIRST, "req_0", DONE), other, "k")


def test_a_request_still_running_is_a_409() -> None:
    with pytest.raises(IdempotencyKeyInUse, match="in progress") as raised:
        replayable(StoredKey(FIRST, "req_0", None), FIRST, "k")
    assert (raised.value.status, raised.value.error_type) == (409, "idempotency_error")
    assert raised.value.code == "idempotency_key_in_use"


def test_a_mismatch_is_reported_before_in_progress() -> None:
    other = RequestPrint(FIRST.method, FIRST.path, b"g" * 32)
    with pytest.raises(IdempotencyKeyReused):
        replayable(StoredKey(FIRST, "req_0", None), other, "k")


def test_a_replay_is_the_stored_response_marked_as_one() -> None:
    response = replay(DONE, "req_0")
    assert (response.status, response.body, response.content_type) == (
        200,
        DONE.body,
        DONE.content_type,
    )
    assert response.headers == [
        (b"x-h", b"v"),
        (b"idempotent-replayed", b"true"),
        (b"original-request", b"req_0"),
    ]


def test_ingest_and_maintenance_agree_on_how_long_a_key_lives() -> None:
    assert KEY_LIFETIME_MS == IDEMPOTENCY_KEY_RETENTION_MS == 24 * 3600 * 1000


# -- the request path, with an in-memory store -----------------------------------------------


@dataclass
class MemoryStore:
    keys: dict[str, tuple[RequestPrint, str, StoredResponse | None]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)

    async def claim(
        self, who: Principal, key: str, incoming: RequestPrint, owner: str, now_ms: int
    ) -> StoredKey | None:
        held = self.keys.get(key)
        if held is None:
            self.keys[key] = (incoming, owner, None)
            return None
        return StoredKey(*held)

    async def complete(
        self, who: Principal, key: str, owner: str, response: StoredResponse
    ) -> None:
        incoming, held_by, _ = self.keys[key]
        assert held_by == owner
        self.keys[key] = (incoming, owner, response)

    async def release(self, who: Principal, key: str, owner: str) -> None:
        self.released.append(key)
        del self.keys[key]


@dataclass
class CountingHandler:
    answer: Response | ApiError | Exception
    calls: int = 0

    async def __call__(self, request: Request, who: Principal) -> Response:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _layer(store: MemoryStore) -> tuple[IdempotentRequests, CollectorRegistry]:
    registry = CollectorRegistry()
    return IdempotentRequests(store, IdempotencyMetrics(registry), clock=lambda: 1.0), registry


def _count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("meterflow_idempotent_requests_total", {"outcome": outcome})
    return value or 0.0


async def test_the_handler_runs_once_and_the_retry_gets_its_response() -> None:
    store = MemoryStore()
    layer, registry = _layer(store)
    handler = CountingHandler(json_response({"id": "mtr_1"}))
    first = await layer.handle(_request(b"a=1"), WHO, "k", handler, error_response)
    again = await layer.handle(
        _request(b"a=1", request_id="req_2"), WHO, "k", handler, error_response
    )
    assert handler.calls == 1
    assert (again.status, again.body) == (first.status, first.body)
    assert (b"idempotent-replayed", b"true") in again.headers
    assert (b"original-request", b"req_1") in again.headers
    assert (b"idempotent-replayed", b"true") not in first.headers
    assert (_count(registry, "stored"), _count(registry, "replayed")) == (1, 1)


async def test_a_client_error_is_kept_and_replayed_in_the_given_shape() -> None:
    store = MemoryStore()
    layer, _ = _layer(store)
    handler = CountingHandler(InvalidRequest("bad", code="no_meter"))
    first = await layer.handle(_request(b"a=1"), WHO, "k", handler, error_response)
    again = await layer.handle(_request(b"a=1"), WHO, "k", handler, error_response)
    assert first.status == again.status == 400
    assert first.body == again.body
    assert handler.calls == 1


async def test_a_503_is_not_kept_so_a_retry_runs_again() -> None:
    store = MemoryStore()
    layer, registry = _layer(store)
    handler = CountingHandler(ServiceUnavailable("Kafka is away", headers={"Retry-After": "1"}))
    first = await layer.handle(_request(b"a=1"), WHO, "k", handler, error_response)
    assert first.status == 503
    assert store.keys == {}
    handler.answer = json_response({"ok": True})
    second = await layer.handle(_request(b"a=1"), WHO, "k", handler, error_response)
    assert (second.status, handler.calls) == (200, 2)
    assert (_count(registry, "not_stored"), _count(registry, "stored")) == (1, 1)


@pytest.mark.parametrize("failure", [RuntimeError("bug"), asyncio.CancelledError()])
async def test_a_request_that_blows_up_releases_its_key(failure: BaseException) -> None:
    store = MemoryStore()
    layer, _ = _layer(store)

    async def explode(_request: Request, _who: Principal) -> Response:
        raise failure

    with pytest.raises(type(failure)):
        await layer.handle(_request(b"a=1"), WHO, "k", explode, error_response)
    assert (store.keys, store.released) == ({}, ["k"])


async def test_mismatch_and_in_progress_are_counted_and_raised() -> None:
    store = MemoryStore()
    layer, registry = _layer(store)
    store.keys["busy"] = (request_print(_request(b"a=1")), "req_0", None)
    handler = CountingHandler(json_response({}))
    with pytest.raises(IdempotencyKeyInUse):
        await layer.handle(_request(b"a=1"), WHO, "busy", handler, error_response)
    with pytest.raises(IdempotencyKeyReused):
        await layer.handle(_request(b"a=2"), WHO, "busy", handler, error_response)
    assert handler.calls == 0
    assert (_count(registry, "in_progress"), _count(registry, "mismatched")) == (1, 1)
