"""Webhooks reach only public targets: refused at registration over real HTTP (IP literals in
disguise, metadata names, names resolving to loopback, http in live mode), refused again at each
delivery connect (an endpoint stored earlier, DNS rebinding), connections made to the checked
address with TLS still verifying the name, and a non-HTTP service's banner never logged.

Everything binds to and connects to 127.0.0.1 only; other names and addresses are either refused
before any connection or answered by a fake resolver that points at 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from functools import partial
from ipaddress import ip_address
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregator.webhooks.http import NOT_HTTP, DeliveryFailed, post
from aggregator.webhooks.worker import Poster, WebhookDeliveryWorker
from ingest.edge.auth import Principal
from ingest.webhooks.store import NewEndpoint, WebhookEndpointStore
from ingest.webhooks.targets import check_endpoint_url
from meterflow.settings import Settings
from meterflow.webhooks.addresses import Address
from meterflow.webhooks.targets import TargetPolicy
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import create_events, meter_event
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth, v1_error
from tests.fixtures.webhook_receiver import BannerServer, WebhookReceiver

pytestmark = pytest.mark.integration

BASE = "/v1/webhook_endpoints"
PUBLIC = "93.184.216.34"  # accepted, never connected to
REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://10.0.0.1:22/",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://017700000001/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00:ec2::254]/hook",
    "http://127.0.0.1:9000/hook",
    "http://localhost:9000/hook",  # resolved (from /etc/hosts) to loopback
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "http://0.0.0.0:9000/hook",
]


@pytest.fixture
def strict_settings(ingest_settings: Settings) -> Settings:
    """The defaults: only public targets."""
    return ingest_settings.with_overrides(
        webhook_allow_private_targets=False, webhook_backoff_base_s=0.1, webhook_max_attempts=2
    )


@pytest.fixture
async def strict_http(strict_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with running_ingest(strict_settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield client


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def _create(http: httpx.AsyncClient, key: str, url: str) -> httpx.Response:
    return await http.post(BASE, data={"url": url, "enabled_events[]": "*"}, headers=auth(key))


def _url_invalid(response: httpx.Response) -> str:
    error = v1_error(response, 400)
    assert (error["code"], error["param"]) == ("url_invalid", "url"), error
    message: str = error["message"]
    return message


async def test_registration_refuses_every_non_public_target(
    strict_http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    for url in REFUSED_URLS:
        _url_invalid(await _create(strict_http, key, url))
    assert (await strict_http.get(BASE, headers=auth(key))).json()["data"] == []

    public = await _create(strict_http, key, f"http://{PUBLIC}/hook")
    assert public.status_code == 200, public.text
    # A name that does not resolve (no DNS here) reaches nothing yet; deliveries check it.
    later = await _create(strict_http, key, "https://hooks.example.com/stripe")
    assert later.status_code == 200, later.text
    path = f"{BASE}/{public.json()['id']}"
    for url in ("http://[::1]:8080/hook", "http://0x7f000001/hook"):
        _url_invalid(await strict_http.post(path, data={"url": url}, headers=auth(key)))
    assert (await strict_http.get(path, headers=auth(key))).json()["url"] == f"http://{PUBLIC}/hook"


async def test_a_refusal_explains_itself(
    strict_http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    message = _url_invalid(await _create(strict_http, key, "http://localhost:9000/hook"))
    assert "localhost resolves to a loopback address" in message
    assert "127.0.0.1" not in message  # what a name resolves to is not shown
    assert "METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS" in message
    message = _url_invalid(await _create(strict_http, key, "http://0x7f000001/hook"))
    assert "dotted decimal" in message
    message = _url_invalid(await _create(strict_http, key, "http://169.254.169.254/"))
    assert "metadata" in message


async def test_live_mode_requires_https(
    strict_http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account(livemode=True)).secret_key
    assert "https" in _url_invalid(await _create(strict_http, key, f"http://{PUBLIC}/hook"))
    created = await _create(strict_http, key, f"https://{PUBLIC}/hook")
    assert created.status_code == 200, created.text
    assert created.json()["livemode"] is True
    path = f"{BASE}/{created.json()['id']}"
    _url_invalid(
        await strict_http.post(path, data={"url": f"http://{PUBLIC}/x"}, headers=auth(key))
    )
    test_key = (await make_account("test mode")).secret_key
    assert (await _create(strict_http, test_key, f"http://{PUBLIC}/hook")).status_code == 200


async def test_the_setting_allows_local_targets_but_never_metadata(
    http: httpx.AsyncClient, ingest_settings: Settings, make_account: AccountFactory
) -> None:
    assert ingest_settings.webhooks.webhook_allow_private_targets
    key = (await make_account()).secret_key
    for url in ("http://127.0.0.1:9000/hook", "http://[::1]:9000/hook", "http://10.0.0.1:8080/"):
        assert (await _create(http, key, url)).status_code == 200, url
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/",
        "http://0x7f000001/hook",
        "http://0.0.0.0:9000/hook",
    ):
        _url_invalid(await _create(http, key, url))
    live_key = (await make_account("live", livemode=True)).secret_key
    _url_invalid(await _create(http, live_key, "http://127.0.0.1:9000/hook"))


# -- at delivery ---------------------------------------------------------------------------------


class FakeDns:
    """Answers from a script, one answer per lookup, the last one repeated."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = [[ip_address(a) for a in answer] for answer in answers]
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.lookups.append(host)
        return self._answers[min(len(self.lookups), len(self._answers)) - 1]


@contextlib.asynccontextmanager
async def _delivering(
    settings: Settings, pool: asyncpg.Pool, poster: Poster | None = None
) -> AsyncIterator[None]:
    worker = WebhookDeliveryWorker(
        settings, pool, CollectorRegistry(), poll_interval_s=0.05, poster=poster
    )
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, settings.webhooks.webhook_timeout_s + 5)


async def _attempts(pool: asyncpg.Pool, endpoint_id: str) -> list[tuple[int | None, str | None]]:
    rows = await pool.fetch(
        """SELECT a.status_code, a.error FROM webhook_delivery_attempts a
           JOIN webhook_deliveries d ON d.id = a.delivery_id
           WHERE d.endpoint_id = $1 ORDER BY a.delivery_id, a.attempt""",
        endpoint_id,
    )
    return [(r["status_code"], r["error"]) for r in rows]


async def _first_attempt(pool: asyncpg.Pool, endpoint_id: str) -> tuple[int | None, str | None]:
    async def attempted() -> bool:
        return bool(await _attempts(pool, endpoint_id))

    await wait_until(attempted, 15, "the first delivery attempt")
    return (await _attempts(pool, endpoint_id))[0]


async def _stored_endpoint(pool: asyncpg.Pool, account_id: str, url: str) -> str:
    """An endpoint written straight to the store, as one registered before the rules were."""
    store = WebhookEndpointStore(pool)
    endpoint = await store.create(Principal(account_id, False), NewEndpoint(url, ["*"]), 0)
    await create_events(pool, [meter_event(account_id, "mtr_a", int(time.time() * 1000))])
    return endpoint.id


async def test_a_delivery_to_a_private_address_is_refused_before_connecting(
    strict_settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account_id = (await make_account()).account_id
    async with WebhookReceiver() as hook:
        endpoint_id = await _stored_endpoint(pool, account_id, hook.url)
        async with _delivering(strict_settings, pool):
            attempt = await _first_attempt(pool, endpoint_id)
        assert hook.received == []
    assert attempt == (None, "refused: 127.0.0.1 is a loopback address")


async def test_dns_rebinding_after_registration_is_refused_at_delivery(
    strict_settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account_id = (await make_account()).account_id
    dns = FakeDns([PUBLIC], ["127.0.0.1"])
    targets = TargetPolicy(allow_private=False, resolver=dns)
    async with WebhookReceiver() as hook:
        url = f"http://rebind.example.test:{hook.port}/hooks/stripe"
        await check_endpoint_url(url, livemode=False, targets=targets)  # public at registration
        endpoint_id = await _stored_endpoint(pool, account_id, url)
        async with _delivering(strict_settings, pool, partial(post, targets=targets)):
            attempt = await _first_attempt(pool, endpoint_id)
        assert hook.received == []
    assert attempt == (None, "refused: rebind.example.test resolves to a loopback address")
    assert dns.lookups[:2] == ["rebind.example.test", "rebind.example.test"]


async def test_one_private_answer_among_public_ones_refuses_the_delivery() -> None:
    targets = TargetPolicy(resolver=FakeDns([PUBLIC, "127.0.0.1"]))
    async with WebhookReceiver() as hook:
        with pytest.raises(DeliveryFailed, match="resolves to a loopback address"):
            await post(f"http://mixed.example.test:{hook.port}/h", b"{}", {}, 5.0, targets=targets)
        assert hook.received == []


async def test_the_connection_goes_to_the_checked_address() -> None:
    """The system resolver knows no ``hooks.example.test``: the request arrives only because the
    connection goes to the address that was checked, with the name kept in ``Host``."""
    dns = FakeDns(["127.0.0.1"])
    targets = TargetPolicy(allow_private=True, resolver=dns)
    async with WebhookReceiver() as hook:
        host = f"hooks.example.test:{hook.port}"
        assert await post(f"http://{host}/hooks/stripe", b"{}", {}, 5.0, targets=targets) == 200
    (received,) = hook.received
    assert received.headers["host"] == host
    assert dns.lookups == ["hooks.example.test"]


# -- TLS to the checked address ------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``hooks.example.test``: (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hooks.example.test",
            "-addext",
            "subjectAltName=DNS:hooks.example.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


async def test_tls_sends_and_verifies_the_name_while_connecting_to_the_checked_address(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda _conn, name, _ctx: names.append(name)
    client = ssl.create_default_context(cafile=str(cert))
    targets = TargetPolicy(allow_private=True, resolver=FakeDns(["127.0.0.1"]))
    async with WebhookReceiver(tls=server) as hook:
        url = f"https://hooks.example.test:{hook.port}/h"
        assert await post(url, b"{}", {}, 5.0, targets=targets, tls_context=client) == 200
        assert names == ["hooks.example.test"]
        assert hook.received[0].headers["host"] == f"hooks.example.test:{hook.port}"
        other = f"https://other.example.test:{hook.port}/h"
        with pytest.raises(DeliveryFailed, match=r"^TLS certificate not valid: Hostname mismatch"):
            await post(other, b"{}", {}, 5.0, targets=targets, tls_context=client)
    assert len(hook.received) == 1


# -- what the log shows --------------------------------------------------------------------------


async def test_a_non_http_banner_never_reaches_the_delivery_log(
    http: httpx.AsyncClient,
    pool: asyncpg.Pool,
    ingest_settings: Settings,
    make_account: AccountFactory,
) -> None:
    account = await make_account()
    settings = ingest_settings.with_overrides(webhook_backoff_base_s=0.1, webhook_max_attempts=2)
    banner = b"SSH-2.0-OpenSSH_9.6p1 secret-banner-7f3a\r\n"
    async with BannerServer(banner) as service:
        created = await _create(http, account.secret_key, f"http://127.0.0.1:{service.port}/h")
        assert created.status_code == 200, created.text
        await create_events(
            pool, [meter_event(account.account_id, "mtr_a", int(time.time() * 1000))]
        )
        path = f"{BASE}/{created.json()['id']}/deliveries"

        async def failed() -> bool:
            response = await http.get(path, headers=auth(account.secret_key))
            return [d["status"] for d in response.json()["data"]] == ["failed"]

        async with _delivering(settings, pool):
            await wait_until(failed, 15, "both attempts to fail")
        assert service.connections == 2
    log = await http.get(path, headers=auth(account.secret_key))
    (delivery,) = log.json()["data"]
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(None, NOT_HTTP)] * 2
    assert "SSH" not in log.text
    assert "secret-banner" not in log.text
    stored = await pool.fetchval("SELECT string_agg(error, ' ') FROM webhook_delivery_attempts")
    assert "SSH" not in stored
