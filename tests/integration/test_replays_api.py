"""``POST /v1/meterflow/replays`` and ``GET /v1/meterflow/replays/:id`` on a real ingest: a
re-drive started over HTTP with the account's secret key, followed to its outcome; Stripe-shaped
errors for bad parameters, other accounts, a replay already running, and no key."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.records.rejected import RejectedRecord, Rejection
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import produce_rejected
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import EVENT_NAME, auth, create_meter, v1_error

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPLAYS = "/v1/meterflow/replays"


def _rejected(account_id: str, n: int, received_ms: int) -> RejectedRecord:
    event = {
        "event_name": EVENT_NAME,
        "payload": {"stripe_customer_id": "cus_1", "value": str(n)},
        "identifier": f"http-{n}",
    }
    rejection = Rejection("no_meter", "No meter", None, EVENT_NAME, f"http-{n}", event)
    return RejectedRecord(account_id, False, received_ms, (rejection,))


async def _finished(http: httpx.AsyncClient, key: str, replay_id: str) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal last
        response = await http.get(f"{REPLAYS}/{replay_id}", headers=auth(key))
        assert response.status_code == 200, response.text
        last = response.json()
        status: str = last["status"]
        return status != "running"

    await wait_until(done, 60, "the replay to finish", interval_s=0.2)
    return last


@pytest.mark.usefixtures("aggregator")
async def test_a_replay_started_over_http_is_followed_to_its_outcome(
    http: httpx.AsyncClient,
    ingest_settings: Settings,
    make_account: AccountFactory,
    kafka_bootstrap: str,
) -> None:
    account = await make_account()
    now_ms = int(time.time() * 1000)
    await produce_rejected(
        kafka_bootstrap,
        ingest_settings.topic_prefix,
        [_rejected(account.account_id, n, now_ms - 60_000) for n in range(1, 6)],
    )
    await create_meter(http, account.secret_key)

    started = await http.post(
        REPLAYS,
        data={"codes[]": "no_meter", "event_name": EVENT_NAME, "rejected_at[gte]": "0"},
        headers=auth(account.secret_key),
    )
    assert started.status_code == 200, started.text
    replay = started.json()
    assert replay["object"] == "meterflow.replay"
    assert replay["id"].startswith("mfrpl_test_")
    assert replay["status"] == "running"
    assert replay["filters"] == {
        "codes": ["no_meter"],
        "meter": None,
        "event_name": EVENT_NAME,
        "rejected_at": {"gte": 0, "lt": None},
    }
    done = await _finished(http, account.secret_key, replay["id"])
    assert done["status"] == "succeeded", done
    assert done["outcomes"] == {"accepted": 5, "duplicate": 0, "rejected": 0, "too_old": 0}
    assert done["progress"]["rejections_matched"] == 5
    assert done["progress"]["records_read"] == done["progress"]["records_total"] >= 5
    assert done["finished_at"] >= done["created"]

    again = await http.post(REPLAYS, json={}, headers=auth(account.secret_key))
    assert again.status_code == 200, again.text
    second = await _finished(http, account.secret_key, again.json()["id"])
    assert second["outcomes"] == {"accepted": 0, "duplicate": 5, "rejected": 0, "too_old": 0}


async def test_replay_errors_are_stripe_shaped(
    http: httpx.AsyncClient,
    database_url: str,
    make_account: AccountFactory,
) -> None:
    account = await make_account()
    other = await make_account("other")
    key = auth(account.secret_key)

    assert (await http.post(REPLAYS, data={})).status_code == 401
    error = v1_error(await http.post(REPLAYS, data={"color": "red"}, headers=key), 400)
    assert (error["code"], error["param"]) == ("parameter_unknown", "color")
    error = v1_error(await http.post(REPLAYS, data={"rejected_at[gte]": "-5"}, headers=key), 400)
    assert error["code"] == "parameter_invalid_integer"
    codes = {f"codes[{n}]": "no_meter" for n in range(21)}
    error = v1_error(await http.post(REPLAYS, data=codes, headers=key), 400)
    assert error["param"] == "codes"
    error = v1_error(await http.get(f"{REPLAYS}/mfrpl_test_nope", headers=key), 404)
    assert error["code"] == "resource_missing"

    # A replay still running (its process writes its heartbeat) keeps another from starting.
    now_ms = int(time.time() * 1000)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO rejected_replays (id, account_id, livemode, filters, status,
                   created_ms, heartbeat_ms)
               VALUES ('mfrpl_test_running', $1, false, '{}', 'running', $2, $2)""",
            account.account_id,
            now_ms,
        )
        error = v1_error(await http.post(REPLAYS, data={}, headers=key), 409)
        assert error["code"] == "replay_in_progress"
        assert "mfrpl_test_running" in error["message"]
        # Another account's replay is not found, like any other object of another account.
        other_get = await http.get(f"{REPLAYS}/mfrpl_test_running", headers=auth(other.secret_key))
        assert v1_error(other_get, 404)["code"] == "resource_missing"
        # Once its heartbeat stops, it reads as failed and no longer blocks.
        await conn.execute(
            "UPDATE rejected_replays SET heartbeat_ms = $1 WHERE id = 'mfrpl_test_running'",
            now_ms - 60_000,
        )
    finally:
        await conn.close()
    stale = (await http.get(f"{REPLAYS}/mfrpl_test_running", headers=key)).json()
    assert stale["status"] == "failed"
    assert "stopped before it finished" in stale["failure_message"]
    fresh = await http.post(REPLAYS, data={}, headers=key)
    assert fresh.status_code == 200, fresh.text
    await _finished(http, account.secret_key, fresh.json()["id"])
