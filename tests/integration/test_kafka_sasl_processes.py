"""meterflow's processes and tools through a Kafka broker that takes only SASL_SSL (SCRAM-SHA-512)
and enforces the ACLs the README recommends, each role with a user of its own, configured the way
an operator does it (``METERFLOW_KAFKA_*``, the CA file the broker's certificate is checked
against).

``meterflow topics`` creates the topics (as the operator); no user but ingest's may write
meter-events. ``meterflow ingest``, ``aggregator`` and ``alerts`` run as processes on the test's
PostgreSQL; events sent over HTTP are folded (event summaries count them) and fire a usage alert;
a stream event for a meter not yet created is rejected onto the rejected-events topic and folded
into an error report. Then the tools: ``meterflow replay rejected`` re-drives that event once its
meter exists and ``meterflow import`` publishes a small file (both as ingest's user), ``meterflow
replay rebuild`` reads the topic back and finds the live rollups equal, ``meterflow consumers``
describes the three groups and ``consumers reset --dry-run`` finds the offsets of a time (all
three as the operator).

That a client without credentials, or with a wrong password, is refused is proven in
``test_kafka_sasl_ssl.py``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from deploy.ports import free_port
from meterflow.kafka.producer import PublishFailed, idempotent_producer, produce_all
from meterflow.kafka.topics import meter_events_topic
from meterflow.settings import environment_variables, load_settings
from meterflow.windows import DAY_S
from tests.conftest import AccountFactory
from tests.fixtures.kafka_acls import Principals, create_acls, recommended_acls
from tests.fixtures.kafka_sasl import SaslBroker, sasl_ssl_broker
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import EVENT_NAME, auth, create_meter, event_form
from tests.fixtures.meterflow_cli import Ran, meterflow
from tests.fixtures.meterflow_processes import log_tails, meterflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

USERS = Principals(
    ingest="meterflow-ingest",
    aggregator="meterflow-aggregator",
    alerts="meterflow-alerts",
    operator="meterflow-operator",
)
LATE_EVENT = "late_meter_tokens"  # its meter is created after the event was rejected
_FOLD_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    users = (USERS.ingest, USERS.aggregator, USERS.alerts, USERS.operator)
    with sasl_ssl_broker(
        tmp_path_factory.mktemp("sasl-kafka"), users=users, authorize=True
    ) as running:
        yield running


def _environment(
    database_url: str, prefix: str, ports: dict[str, int], data_dir: Path
) -> dict[str, str]:
    """A ``meterflow`` child's environment but its Kafka user: nothing meterflow reads is
    inherited."""
    inherited = {k: v for k, v in os.environ.items() if k not in environment_variables()}
    return inherited | {
        "DATABASE_URL": database_url,
        "METERFLOW_TOPIC_PREFIX": prefix,
        # No local stack recorded there: the tools use only what this environment says.
        "METERFLOW_DATA_DIR": str(data_dir),
        "METERFLOW_HTTP_PORT": str(ports["ingest"]),
        "METERFLOW_AGGREGATOR_METRICS_PORT": str(ports["aggregator"]),
        "METERFLOW_ALERTS_METRICS_PORT": str(ports["alerts"]),
        "METERFLOW_CONSUMER_GROUP": f"g-{prefix}",
        "METERFLOW_ALERTS_CONSUMER_GROUP": f"alerts-{prefix}",
        "METERFLOW_CONSUMER_NICE": "0",
        "METERFLOW_SHUTDOWN_DEADLINE_S": "5",
    }


async def _aggregated(
    http: httpx.AsyncClient, key: str, meter: str, customer: str, now_s: int
) -> float:
    start = (now_s // DAY_S - 1) * DAY_S
    params: dict[str, str | int] = {
        "customer": customer,
        "start_time": start,
        "end_time": start + 3 * DAY_S,
    }
    response = await http.get(
        f"/v1/billing/meters/{meter}/event_summaries", params=params, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return float(sum(s["aggregated_value"] for s in response.json()["data"]))


async def _alert_fired(http: httpx.AsyncClient, key: str) -> bool:
    response = await http.get(
        "/v1/events", params={"type": "billing.alert.triggered"}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return len(response.json()["data"]) == 1


async def _error_reported(database_url: str, account_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        errors = await conn.fetchval(
            """SELECT coalesce(sum(error_count), 0) FROM error_report_windows
               WHERE account_id = $1 AND code = 'no_meter'""",
            account_id,
        )
    finally:
        await conn.close()
    return int(errors) == 1


async def _write_refusal(broker: SaslBroker, topic: str) -> type[BaseException] | None:
    """Why Kafka refuses ``broker``'s user a record on ``topic`` (None: it took it)."""
    security = load_settings(broker.client_environment()).kafka
    producer = idempotent_producer(broker.bootstrap_servers, "acl-probe", security=security)
    try:
        await producer.start()
        await produce_all(producer, topic, [(b"probe", b"{}")], timeout_s=10)
    except PublishFailed as exc:
        return type(exc.__cause__ or exc)
    except KafkaError as exc:
        return type(exc)
    finally:
        await producer.stop()
    return None


def _succeeded(ran: Ran, logs: Path) -> str:
    assert ran.code == 0, f"{ran.out}\n{ran.err}\n{log_tails(logs)}"
    return ran.out


async def _send(http: httpx.AsyncClient, key: str, now_s: int) -> str:
    """A meter and a usage alert over 10 for cus_1; three events of 4 for cus_1 over HTTP, and
    one through the stream for a meter that does not exist yet, rejected asynchronously. Returns
    the meter's id."""
    meter: str = (await create_meter(http, key))["id"]
    alert = {
        "alert_type": "usage_threshold",
        "title": "Tokens over 10",
        "usage_threshold[gte]": "10",
        "usage_threshold[meter]": meter,
        "usage_threshold[recurrence]": "one_time",
        "usage_threshold[filters][0][type]": "customer",
        "usage_threshold[filters][0][customer]": "cus_1",
    }
    created = await http.post("/v1/billing/alerts", data=alert, headers=auth(key))
    assert created.status_code == 200, created.text
    for n in range(3):
        form = event_form("cus_1", "4", identifier=f"http-{n}", timestamp=str(now_s - n))
        sent = await http.post("/v1/billing/meter_events", data=form, headers=auth(key))
        assert sent.status_code == 200, sent.text
    session = await http.post("/v2/billing/meter_event_session", json={}, headers=auth(key))
    assert session.status_code == 200, session.text
    late = {
        "event_name": LATE_EVENT,
        "identifier": "late-1",
        "payload": {"stripe_customer_id": "cus_2", "value": "7"},
    }
    streamed = await http.post(
        "/v2/billing/meter_event_stream",
        json={"events": [late]},
        headers=auth(session.json()["authentication_token"]),
    )
    assert streamed.status_code == 200, streamed.text
    return meter


async def test_processes_and_tools_work_through_sasl_ssl_with_the_recommended_acls(
    broker: SaslBroker, database_url: str, make_account: AccountFactory, tmp_path: Path
) -> None:
    prefix = f"sasl_{uuid.uuid4().hex[:8]}."
    ports = {"ingest": free_port(), "aggregator": free_port(), "alerts": free_port()}
    env = _environment(database_url, prefix, ports, tmp_path / "data")
    as_ingest, as_aggregator, as_alerts, as_operator = (
        env | broker.as_user(user).client_environment()
        for user in (USERS.ingest, USERS.aggregator, USERS.alerts, USERS.operator)
    )
    await create_acls(broker, recommended_acls(load_settings(env), USERS))
    logs = tmp_path / "logs"
    logs.mkdir()
    assert "4 topic(s) present" in _succeeded(await meterflow(as_operator, "topics"), logs)
    events_topic = meter_events_topic(prefix)
    for user in (USERS.aggregator, USERS.alerts, USERS.operator):
        refusal = await _write_refusal(broker.as_user(user), events_topic)
        assert refusal in (TopicAuthorizationFailedError, ClusterAuthorizationFailedError), user
    account = await make_account("sasl")
    key, now_s = account.secret_key, int(time.time())

    def ready(role: str) -> dict[str, str]:
        return {role: f"http://127.0.0.1:{ports[role]}/readyz"}

    async with (
        meterflow_processes(as_ingest, ready("ingest"), logs),
        meterflow_processes(as_aggregator, ready("aggregator"), logs),
        meterflow_processes(as_alerts, ready("alerts"), logs),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['ingest']}", timeout=10) as http,
    ):
        meter = await _send(http, key, now_s)

        async def summed(meter: str, customer: str, expected: float) -> bool:
            return await _aggregated(http, key, meter, customer, now_s) == expected

        await wait_until(lambda: summed(meter, "cus_1", 12), _FOLD_TIMEOUT_S, "the fold", 0.2)
        await wait_until(lambda: _alert_fired(http, key), _FOLD_TIMEOUT_S, "the alert", 0.2)
        await wait_until(
            lambda: _error_reported(database_url, account.account_id),
            _FOLD_TIMEOUT_S,
            "the stream's rejection in an error report",
            0.2,
        )

        # The tools, through the same broker.
        late_meter: str = (await create_meter(http, key, event_name=LATE_EVENT))["id"]
        redrive = ("replay", "rejected", "--account", account.account_id, "--test")
        redriven = _succeeded(await meterflow(as_ingest, *redrive), logs)
        assert "accepted 1, duplicate 0, rejected 0, too_old 0" in redriven
        source = tmp_path / "usage.csv"
        source.write_text(
            "event_name,timestamp,identifier,payload.stripe_customer_id,payload.value\n"
            f"{EVENT_NAME},{now_s - 60},import-1,cus_1,5\n"
            f"{EVENT_NAME},{now_s - 61},import-2,cus_1,6\n"
        )
        imported = await meterflow(
            as_ingest, "import", str(source), "--account", account.account_id
        )
        assert "2 events published, 0 rejected" in _succeeded(imported, logs)
        await wait_until(lambda: summed(meter, "cus_1", 23), _FOLD_TIMEOUT_S, "the import", 0.2)
        await wait_until(
            lambda: summed(late_meter, "cus_2", 7), _FOLD_TIMEOUT_S, "the re-drive", 0.2
        )
        rebuild = ("replay", "rebuild", "--account", account.account_id)
        assert "no differences" in _succeeded(await meterflow(as_operator, *rebuild), logs)
        consumers = await meterflow(as_operator, "consumers", "--json")
        listed = orjson.loads(_succeeded(consumers, logs))
        described = {(g["group"], g["topic"]): (g["state"], g["members"]) for g in listed}
        assert described == {
            (f"g-{prefix}", f"{prefix}meter-events"): ("Stable", 1),
            (f"g-{prefix}-error-reports", f"{prefix}meter-events-rejected"): ("Stable", 1),
            (f"alerts-{prefix}", f"{prefix}usage-changes"): ("Stable", 1),
        }
        reset = ("consumers", "reset", f"g-{prefix}", "--to-time", str(now_s - 120), "--dry-run")
        assert "would move" in _succeeded(await meterflow(as_operator, *reset), logs)
