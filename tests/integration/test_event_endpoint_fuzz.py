"""Hostile input to the meter event endpoints: a Stripe-shaped 4xx, never a 5xx or a hang.

Every test sends its requests to a real ingest, waits until ingest has finished them all (requests
whose client hung up included), then checks that ingest counted no 5xx and that the meter-events
topic is still empty. A valid sentinel sent last must then be the topic's only record, which shows
the emptiness was read from the topic ingest writes to. The cases themselves are data, in
tests/fixtures/hostile_inputs.py; the generated part uses hypothesis.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterflow.records.meter_events import CancelRecord, EventsRecord
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.hostile_http import (
    EVENT_ENDPOINTS,
    FORM,
    JSON,
    V1_ADJUSTMENTS,
    V1_EVENTS,
    V2_ADJUSTMENTS,
    V2_EVENTS,
    Rejections,
    check_raw_rejection,
    error_of,
    raw_exchange,
    request_head,
    server_error_counts,
    wait_until_idle,
)
from tests.fixtures.hostile_inputs import (
    MAX_BODY_BYTES,
    PROCESSED_IDENTIFIER,
    Case,
    all_field_cases,
    content_type_cases,
    control_character_cases,
    deeply_nested_cases,
    form_body,
    form_key_cases,
    form_pairs,
    invalid_utf8_cases,
    json_body,
    malformed_json_cases,
    replaced,
    sized_json,
    valid_cancel,
    valid_event,
)
from tests.fixtures.meter_events_http import auth, create_meter, mark_processed
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration

SLOW_ANSWER_S = 2.0  # far above any honest answer here; a recursing or quadratic parser is slower
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Target:
    """An account with the test meter and one processed (so cancellable) event."""

    url: str
    headers: dict[str, str]
    kafka_bootstrap: str
    topic_prefix: str


@pytest.fixture
async def target(
    http: httpx.AsyncClient, ingest_settings: Settings, make_account: AccountFactory
) -> Target:
    database_url = ingest_settings.database_url
    kafka_bootstrap = ingest_settings.kafka_bootstrap_servers
    assert database_url is not None
    assert kafka_bootstrap is not None
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    await mark_processed(database_url, account.account_id, PROCESSED_IDENTIFIER, meter["id"])
    url = str(http.base_url).rstrip("/")
    return Target(url, auth(account.secret_key), kafka_bootstrap, ingest_settings.topic_prefix)


async def _send(http: httpx.AsyncClient, target: Target, case: Case) -> httpx.Response:
    headers = dict(target.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    return await http.post(case.path, content=case.body, headers=headers)


async def _refuse_all(http: httpx.AsyncClient, target: Target, cases: Iterable[Case]) -> None:
    rejections = Rejections()
    for case in cases:
        started = time.monotonic()
        response = await _send(http, target, case)
        rejections.expect(case.name, case.path, response, case.status)
        if (elapsed := time.monotonic() - started) > SLOW_ANSWER_S:
            rejections.problems.append(f"{case.name} on {case.path}: answered in {elapsed:.1f}s")
    rejections.assert_none()


async def _assert_nothing_published(http: httpx.AsyncClient, target: Target) -> None:
    metrics = await wait_until_idle(http)
    assert server_error_counts(metrics) == []
    async with MeterEventsReader(target.kafka_bootstrap, target.topic_prefix) as topic:
        assert await topic.record_count() == 0
        sentinel = await http.post(
            V1_EVENTS, content=json_body(valid_event("sentinel")), headers=_json(target)
        )
        assert sentinel.status_code == 200, sentinel.text
        [(_, record)] = await topic.read_decoded(1)
        assert isinstance(record, EventsRecord)
        assert record.events[0].identifier == "sentinel"
        assert await topic.record_count() == 1


def _json(target: Target) -> dict[str, str]:
    return {**target.headers, "Content-Type": JSON}


async def test_malformed_and_non_object_json(http: httpx.AsyncClient, target: Target) -> None:
    await _refuse_all(http, target, malformed_json_cases())
    await _assert_nothing_published(http, target)


async def test_deep_nesting_is_refused_without_recursing(
    http: httpx.AsyncClient, target: Target
) -> None:
    await _refuse_all(http, target, deeply_nested_cases())
    await _assert_nothing_published(http, target)


async def test_invalid_utf8_in_bodies_queries_and_paths(
    http: httpx.AsyncClient, target: Target
) -> None:
    await _refuse_all(http, target, invalid_utf8_cases())
    form = form_body(form_pairs(valid_event()))
    anonymous = valid_event()
    del anonymous["identifier"]
    without_identifier = form_body(form_pairs(anonymous))
    rejections = Rejections()
    for escaped in ("%FF", "%C3%28", "%ED%A0%80", "%E2%82"):
        response = await http.post(
            f"{V1_EVENTS}?identifier=evt-{escaped}",
            content=without_identifier,
            headers={**target.headers, "Content-Type": FORM},
        )
        rejections.expect(f"query identifier evt-{escaped}", V1_EVENTS, response)
        for path in (V2_EVENTS, V2_ADJUSTMENTS):
            response = await http.post(
                f"{path}?identifier={escaped}", json=valid_event(), headers=target.headers
            )
            rejections.expect(f"query {escaped}", path, response)
        for path in EVENT_ENDPOINTS:
            response = await http.post(f"{path}{escaped}", content=form, headers=target.headers)
            rejections.expect(f"path ending {escaped}", path, response, 404)
    rejections.assert_none()

    # Raw non-ASCII bytes in the request target, as no well-behaved client sends them: the HTTP
    # parser refuses the request line before ingest sees a request.
    for raw in (b"\xff", b"\xc3\x28", b"\x80"):
        head = request_head(
            target.url,
            V1_EVENTS.encode() + b"?identifier=evt-" + raw,
            {
                **target.headers,
                "Content-Type": FORM,
                "Content-Length": str(len(without_identifier)),
            },
        )
        answer = await raw_exchange(target.url, head, (without_identifier,))
        assert answer is not None
        assert answer.status == 400, answer
    await _assert_nothing_published(http, target)


async def test_control_characters_are_refused(http: httpx.AsyncClient, target: Target) -> None:
    await _refuse_all(http, target, control_character_cases())
    await _assert_nothing_published(http, target)


async def test_field_sizes_types_identifiers_and_numbers(
    http: httpx.AsyncClient, target: Target
) -> None:
    await _refuse_all(http, target, all_field_cases(int(time.time())))
    await _assert_nothing_published(http, target)


async def test_content_types_and_form_keys(http: httpx.AsyncClient, target: Target) -> None:
    await _refuse_all(http, target, [*content_type_cases(), *form_key_cases()])
    await _assert_nothing_published(http, target)


async def test_bodies_over_the_limit_are_413(http: httpx.AsyncClient, target: Target) -> None:
    rejections = Rejections()
    for path in EVENT_ENDPOINTS:
        at_limit = await http.post(path, content=sized_json(MAX_BODY_BYTES), headers=_json(target))
        rejections.expect("a body of exactly the limit", path, at_limit, 400)
        over = await http.post(path, content=sized_json(MAX_BODY_BYTES + 1), headers=_json(target))
        error = rejections.expect("a body one byte over the limit", path, over, 413)
        if error is not None and path.startswith("/v2/"):
            assert error["code"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: chunked transfer encoding, the size known only while reading.
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        chunked = await http.post(path, content=chunks(), headers=_json(target))
        rejections.expect("a chunked body over the limit", path, chunked, 413)
    rejections.assert_none()

    for path in EVENT_ENDPOINTS:
        for declared in (MAX_BODY_BYTES + 1, 10**12):
            # The declared size alone is refused, at once: the body is never sent.
            head = request_head(
                target.url, path.encode(), {**_json(target), "Content-Length": str(declared)}
            )
            response = await raw_exchange(target.url, head)
            assert response is not None
            check_raw_rejection(path, response, 413)
    await _assert_nothing_published(http, target)


def _cut_event() -> bytes:
    """A form whose value comes last, so that cutting "25" to "2" leaves a valid form."""
    return form_body(
        [
            ("event_name", valid_event()["event_name"]),
            ("identifier", "evt-cut"),
            ("payload[stripe_customer_id]", "cus_1"),
            ("payload[value]", "25"),
        ]
    )


async def test_lying_content_length_and_malformed_framing(
    http: httpx.AsyncClient, target: Target
) -> None:
    whole = _cut_event()
    headers = {**target.headers, "Content-Type": FORM}
    # Content-Length shorter than the body: the declared bytes are the request ("event_name"
    # without a value), and what follows is not a request at all; the HTTP parser refuses it.
    head = request_head(target.url, V1_EVENTS.encode(), {**headers, "Content-Length": "10"})
    response = await raw_exchange(target.url, head, (whole,))
    assert response is not None
    assert response.status == 400, response
    # Malformed framing is refused by the HTTP parser before ingest sees a request.
    for framing in (
        {"Content-Length": "-1"},
        {"Content-Length": "abc"},
        {"Content-Length": "1e3"},
        {"Content-Length": "\u00b2"},
        {"Content-Length": f"{len(whole)}, {len(whole) + 1}"},
        {"Transfer-Encoding": "chunked, identity"},
    ):
        head = request_head(target.url, V1_EVENTS.encode(), {**headers, **framing})
        response = await raw_exchange(target.url, head, (whole,))
        assert response is not None
        assert response.status == 400, (framing, response)
    await _assert_nothing_published(http, target)


async def test_a_body_cut_short_by_a_hang_up_is_not_recorded(
    http: httpx.AsyncClient, target: Target
) -> None:
    whole = _cut_event()
    headers = {**target.headers, "Content-Type": FORM}
    cut = whole[: whole.index(b"25") + 1]  # "...payload[value]=2": valid, but not what was sent
    # Content-Length longer than what arrives before the client hangs up.
    head = request_head(
        target.url, V1_EVENTS.encode(), {**headers, "Content-Length": str(len(whole))}
    )
    assert await raw_exchange(target.url, head, (cut,), close_write_after_s=1.0) is None
    # A chunked body whose last chunk never comes.
    head = request_head(target.url, V1_EVENTS.encode(), {**headers, "Transfer-Encoding": "chunked"})
    chunk = f"{len(cut):x}\r\n".encode() + cut + b"\r\n"
    assert await raw_exchange(target.url, head, (chunk,), close_write_after_s=1.0) is None
    await _assert_nothing_published(http, target)


# -- generated requests --------------------------------------------------------------------------

# Characters that parsers, databases and logs treat specially, drawn far more often than chance.
_HOSTILE_CHARACTERS = st.sampled_from(
    ["\x00", "\x01", "\t", "\n", "\x1b", "\x7f", "\x85", "\u00a0", "\u2028", "\ufeff",
     "\ufffd", "\U0010ffff", "[", "]", "=", "&", "%", "+", " ", "-", ".", "e", "0", "9"]
)  # fmt: skip
_text = st.text(
    st.one_of(_HOSTILE_CHARACTERS, _HOSTILE_CHARACTERS, st.characters(codec="utf-8")),
    min_size=1,
    max_size=12,
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what the JSON encoder takes
    | st.floats(allow_nan=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_EVENT_FIELDS = [
    ("event_name",),
    ("identifier",),
    ("timestamp",),
    ("payload",),
    ("payload", "value"),
    ("payload", "stripe_customer_id"),
    ("payload", "region"),
]
_CANCEL_FIELDS = [("event_name",), ("type",), ("cancel",), ("cancel", "identifier")]
_form_keys = st.sampled_from(
    ["event_name", "identifier", "timestamp", "payload[value]", "payload[stripe_customer_id]",
     "cancel[identifier]", "type"]
) | st.text(alphabet="payloadvue_[]0139", max_size=24)  # fmt: skip


@st.composite
def _generated_requests(draw: st.DrawFn) -> tuple[str, str | None, bytes]:
    """(path, content type, body): a mutated valid request (mostly), random JSON, a random form,
    or random bytes."""
    path = draw(st.sampled_from(EVENT_ENDPOINTS))
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "form", "bytes"]))
    if kind == "mutated":
        cancel = path in (V1_ADJUSTMENTS, V2_ADJUSTMENTS)
        document = valid_cancel() if cancel else valid_event("evt-generated")
        fields = _CANCEL_FIELDS if cancel else _EVENT_FIELDS
        for _ in range(draw(st.integers(1, 2))):
            # Strings mostly: a string where a string belongs reaches the deepest checks.
            value = draw(st.one_of(_text, _text, _json_values))
            document = replaced_deep(document, draw(st.sampled_from(fields)), value)
        if path.startswith("/v1/") and draw(st.booleans()):
            return path, FORM, form_body(form_pairs(document))
        return path, JSON, json_body(document)
    if kind == "json":
        return path, JSON, json_body(draw(_json_values))
    if kind == "form":
        pairs = draw(st.lists(st.tuples(_form_keys, _text), max_size=8))
        return path, FORM, form_body(pairs)
    content_type = draw(st.sampled_from([JSON, FORM, None, "text/plain"]))
    return path, content_type, draw(st.binary(max_size=512))


def replaced_deep(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """:func:`replaced`, also when a mutation already made the parent a non-object."""
    if len(path) > 1 and not isinstance(document.get(path[0]), dict):
        return replaced(document, path[:1], value)
    return replaced(document, path, value)


def _control_characters(answer: dict[str, Any]) -> list[str]:
    """Control characters in what an accepted event or cancel echoes back."""
    texts = [answer.get("event_name", ""), answer.get("identifier") or ""]
    texts += [*answer.get("payload", {}).keys(), *answer.get("payload", {}).values()]
    texts.append((answer.get("cancel") or {}).get("identifier", ""))
    return [text for text in texts if _CONTROL.search(text)]


def _send_generated(url: str, headers: dict[str, str], examples: int) -> tuple[int, list[str]]:
    """Run the generated requests; return how many were accepted, and every wrong answer."""
    accepted = 0
    wrong: list[str] = []

    with httpx.Client(base_url=url, timeout=10.0) as client:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(_generated_requests())
        def send(request: tuple[str, str | None, bytes]) -> None:
            nonlocal accepted
            path, content_type, body = request
            extra = {} if content_type is None else {"Content-Type": content_type}
            response = client.post(path, content=body, headers={**headers, **extra})
            if response.status_code == 200:
                accepted += 1
                if found := _control_characters(response.json()):
                    wrong.append(f"{path} {body[:200]!r}: accepted with {found}")
                return
            try:
                error_of(path, response, response.status_code)
                assert 400 <= response.status_code < 500
            except (AssertionError, ValueError, KeyError) as exc:
                wrong.append(f"{path} {content_type} {body[:200]!r}: {response.status_code} {exc}")

        send()
    return accepted, wrong


async def test_generated_requests_are_refused_or_recorded_exactly_once(
    http: httpx.AsyncClient, target: Target
) -> None:
    # The synchronous client runs in a worker thread; ingest runs in its own thread.
    accepted, wrong = await asyncio.to_thread(_send_generated, target.url, target.headers, 400)
    assert wrong == []
    metrics = await wait_until_idle(http)
    assert server_error_counts(metrics) == []
    async with MeterEventsReader(target.kafka_bootstrap, target.topic_prefix) as topic:
        assert await topic.record_count() == accepted


# -- the control: edge inputs that are valid are recorded exactly --------------------------------


async def test_valid_edge_inputs_are_recorded_exactly(
    http: httpx.AsyncClient, target: Target
) -> None:
    now_s = int(time.time())
    wide = valid_event("evt-wide")
    wide["payload"] = {f"{i:02d}{'k' * 98}": "v" * 500 for i in range(48)} | {
        "stripe_customer_id": "c" * 500,
        "value": "1",
    }
    events: list[tuple[str, dict[str, Any], tuple[str, str, str]]] = [
        # (path, event, (identifier, customer, value) as recorded)
        (V1_EVENTS, replaced(valid_event("évènement-🙂-ü"), ("payload", "value"), "-0"),
         ("évènement-🙂-ü", "cus_1", "-0")),
        (V2_EVENTS, replaced(valid_event("🙂" * 100), ("payload", "stripe_customer_id"), "客户-1"),
         ("🙂" * 100, "客户-1", "25")),
        (V1_EVENTS, replaced(valid_event("a b"), ("payload", "value"), "123456789012345"),
         ("a b", "cus_1", "123456789012345")),
        (V2_EVENTS, replaced(valid_event("i" * 100), ("payload", "value"), "-1234567890.12345"),
         ("i" * 100, "cus_1", "-1234567890.12345")),
        (V1_EVENTS, replaced(valid_event("evt-fraction"), ("payload", "value"), ".5"),
         ("evt-fraction", "cus_1", ".5")),
        (V1_EVENTS, wide, ("evt-wide", "c" * 500, "1")),
    ]  # fmt: skip
    sent: list[tuple[str, str, str]] = []
    for path, event, as_recorded in events:
        response = await http.post(path, content=json_body(event), headers=_json(target))
        assert response.status_code == 200, response.text
        sent.append(as_recorded)
    form = form_pairs(replaced(valid_event("evt-form"), ("timestamp",), str(now_s - 34 * 86400)))
    response = await http.post(
        V1_EVENTS, content=form_body(form), headers={**target.headers, "Content-Type": FORM}
    )
    assert response.status_code == 200, response.text
    sent.append(("evt-form", "cus_1", "25"))
    stamp = time.strftime("%Y-%m-%dt%H:%M:%S.123456789+01:00", time.gmtime(now_s + 3600))
    response = await http.post(
        V2_EVENTS, json=replaced(valid_event("evt-offset"), ("timestamp",), stamp),
        headers=target.headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    sent.append(("evt-offset", "cus_1", "25"))
    for path in (V1_ADJUSTMENTS, V2_ADJUSTMENTS):
        response = await http.post(path, json=valid_cancel(), headers=target.headers)
        assert response.status_code == 200, response.text

    metrics = await wait_until_idle(http)
    assert server_error_counts(metrics) == []
    async with MeterEventsReader(target.kafka_bootstrap, target.topic_prefix) as topic:
        records = [record for _, record in await topic.read_decoded(len(sent) + 2)]
        assert await topic.record_count() == len(sent) + 2
    recorded = sorted(
        (e.identifier, e.customer, e.value)
        for r in records
        if isinstance(r, EventsRecord)
        for e in r.events
    )
    assert recorded == sorted(sent)
    cancels = [r.identifier for r in records if isinstance(r, CancelRecord)]
    assert cancels == [PROCESSED_IDENTIFIER, PROCESSED_IDENTIFIER]
    offset = next(
        e
        for r in records
        if isinstance(r, EventsRecord)
        for e in r.events
        if e.identifier == "evt-offset"
    )
    assert offset.timestamp_s == now_s
