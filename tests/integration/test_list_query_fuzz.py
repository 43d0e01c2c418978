"""Hostile query strings on every GET list endpoint: a 200 or a Stripe-shaped 4xx, never a 5xx.

The table-driven part (tests/fixtures/hostile_queries.py) gives each parameter of each list
endpoint every hostile value and shape; the generated part (hypothesis) builds whole query
strings from the endpoints' own parameter names and a hostile alphabet. Both then check that
ingest counted no 5xx at all, requests whose answer looked right included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import AccountFactory
from tests.fixtures.hostile_http import server_error_counts, wait_until_idle
from tests.fixtures.hostile_queries import (
    CUSTOMER,
    ENDPOINT,
    LIST_ENDPOINTS,
    METER,
    QueryCase,
    every_query_case,
)
from tests.fixtures.meter_events_http import auth, create_meter

pytestmark = pytest.mark.integration

SLOW_ANSWER_S = 2.0
IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class Caller:
    """An account with a meter, a customer and a webhook endpoint, to fill in paths."""

    headers: dict[str, str]
    objects: dict[str, str]  # placeholder -> object id

    def target(self, case: QueryCase) -> str:
        target = case.target
        for placeholder, object_id in self.objects.items():
            target = target.replace(placeholder, object_id)
        return target


@pytest.fixture
async def caller(http: httpx.AsyncClient, make_account: AccountFactory) -> Caller:
    account = await make_account()
    headers = auth(account.secret_key)
    meter = await create_meter(http, account.secret_key)
    customer = await http.post("/v1/customers", data={"name": "Fuzz"}, headers=headers)
    assert customer.status_code == 200, customer.text
    endpoint = await http.post(
        "/v1/webhook_endpoints",
        data={"url": "http://127.0.0.1:9/hook", "enabled_events[]": "*"},
        headers=headers,
    )
    assert endpoint.status_code == 200, endpoint.text
    return Caller(
        headers,
        {METER: meter["id"], CUSTOMER: customer.json()["id"], ENDPOINT: endpoint.json()["id"]},
    )


def wrong_answer(path: str, response: httpx.Response) -> str | None:
    """Why ``response`` is not a 200 list or a Stripe-shaped 4xx of its API version, or None."""
    status = response.status_code
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        return f"{status} is not JSON: {response.content[:200]!r}"
    if status == 200:
        return None
    error = body.get("error")
    if not 400 <= status < 500 or not isinstance(error, dict) or not error.get("message"):
        return f"{status}: {body}"
    if path.startswith("/v2/"):
        right = set(error) == {"type", "code", "message"}
    else:
        right = error.get("type") == "invalid_request_error"
    return None if right else f"{status} not in the error shape of {path[:3]}: {error}"


async def test_every_list_parameter_refuses_hostile_values_cleanly(
    http: httpx.AsyncClient, caller: Caller
) -> None:
    cases = list(every_query_case())
    problems: list[str] = []
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def check(case: QueryCase) -> None:
        async with slots:
            started = time.monotonic()
            response = await http.get(caller.target(case), headers=caller.headers)
            elapsed = time.monotonic() - started
        if (why := wrong_answer(case.path, response)) is not None:
            problems.append(f"GET {case.target}: {why}")
        elif elapsed > SLOW_ANSWER_S:
            problems.append(f"GET {case.target}: answered in {elapsed:.1f}s")

    await asyncio.gather(*(check(case) for case in cases))
    assert problems == [], f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems[:60])
    assert server_error_counts(await wait_until_idle(http)) == []


# -- generated query strings ---------------------------------------------------------------------

_NAMES = sorted({name for endpoint in LIST_ENDPOINTS for name in endpoint.params})
_ESCAPES = ["%00", "%01", "%0A", "%7F", "%C2%85", "%FF", "%ED%A0%80", "%E2%82", "%25", "%26"]
_PIECES = st.sampled_from(
    [*_ESCAPES, "[", "]", "[]", "=", "&", "+", "-", ".", "0", "9", "1e9", "x", "_", "\u00e9"]
)
_text = st.lists(_PIECES, max_size=8).map("".join)
_name = st.one_of(
    st.sampled_from(_NAMES),
    st.tuples(st.sampled_from(_NAMES), _text).map(lambda pair: f"{pair[0]}[{pair[1]}]"),
    _text,
)


@st.composite
def _queries(draw: st.DrawFn) -> QueryCase:
    endpoint = draw(st.sampled_from(LIST_ENDPOINTS))
    pairs = [f"{name}={value}" for name, value in endpoint.base if draw(st.booleans())]
    pairs += draw(st.lists(st.tuples(_name, _text).map("=".join), max_size=6))
    return QueryCase(endpoint.path, "&".join(draw(st.permutations(pairs))))


def _send_generated(url: str, caller: Caller, examples: int) -> list[str]:
    wrong: list[str] = []
    with httpx.Client(base_url=url, timeout=10.0) as client:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(_queries())
        def send(case: QueryCase) -> None:
            response = client.get(caller.target(case), headers=caller.headers)
            if (why := wrong_answer(case.path, response)) is not None:
                wrong.append(f"GET {case.target}: {why}")

        send()
    return wrong


async def test_generated_list_queries_never_fail_inside(
    http: httpx.AsyncClient, caller: Caller
) -> None:
    url = str(http.base_url).rstrip("/")
    # The synchronous client runs in a worker thread; ingest runs in its own thread.
    wrong = await asyncio.to_thread(_send_generated, url, caller, 400)
    assert wrong == []
    assert server_error_counts(await wait_until_idle(http)) == []


async def test_a_nul_event_type_is_a_400_on_both_event_lists(
    http: httpx.AsyncClient, caller: Caller
) -> None:
    # The reproduction: both answered 500 (PostgreSQL text cannot hold NUL).
    for path in ("/v1/events", "/v2/core/events"):
        response = await http.get(f"{path}?types[]=%00", headers=caller.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "parameter_invalid"
