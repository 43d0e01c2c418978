"""Meter event stream sessions: a short-lived token per account, renewed before it expires.

``POST /v2/billing/meter_event_session`` (secret key) answers ``authentication_token`` and
``expires_at`` (15 minutes later); stream requests carry the token as their Bearer credential.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from loadtest.client import HttpClient, HttpResponse
from loadtest.plan import RunSetup
from loadtest.wire import V2_SESSION, RequestEncoder
from meterflow.errors import MeterflowError

SESSION_EXPIRED = "billing_meter_event_session_expired"
_RENEW_MARGIN_S = 60.0
_DEFAULT_LIFETIME_S = 15 * 60.0


class StreamUnavailable(MeterflowError):
    """The server has no meter event stream (it answers 404 for the session endpoint)."""


class SessionFailed(MeterflowError):
    """The session endpoint answered something other than a session."""


def session_from(response: HttpResponse, now_s: float) -> tuple[str, float]:
    """(token, expiry in unix seconds) from a session answer; raises if it is not one."""
    if response.status == 404:
        raise StreamUnavailable(
            f"stream endpoint not available: POST {V2_SESSION} answered 404 "
            f"({response.body[:120].decode(errors='replace')})"
        )
    if response.status != 200:
        raise SessionFailed(
            f"POST {V2_SESSION} answered {response.status}: "
            f"{response.body[:200].decode(errors='replace')}"
        )
    document = response.json()
    token = document.get("authentication_token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise SessionFailed(f"POST {V2_SESSION} answered no authentication_token")
    expires = document.get("expires_at") if isinstance(document, dict) else None
    try:
        expires_s = datetime.fromisoformat(str(expires).replace("Z", "+00:00")).timestamp()
    except ValueError:
        expires_s = now_s + _DEFAULT_LIFETIME_S
    return token, expires_s


class StreamSessions:
    """One session per account, shared by a worker's lanes."""

    def __init__(self, setup: RunSetup, encoder: RequestEncoder, client: HttpClient) -> None:
        self._setup = setup
        self._encoder = encoder
        self._client = client
        self._tokens: dict[int, tuple[str, float]] = {}
        self._renewing = asyncio.Lock()  # lanes share one connection for session requests

    async def open_all(self) -> None:
        for account in range(len(self._setup.accounts)):
            await self.renew(account)

    async def token(self, account: int) -> str:
        current = self._tokens.get(account)
        if current is None or current[1] - _RENEW_MARGIN_S < time.time():
            return await self.renew(account, stale=current[0] if current else None)
        return current[0]

    async def renew(self, account: int, stale: str | None = None) -> str:
        """A new token, unless another lane already replaced ``stale`` meanwhile."""
        async with self._renewing:
            current = self._tokens.get(account)
            if current is not None and current[0] != stale and current[1] > time.time():
                return current[0]
            key = self._setup.accounts[account].secret_key
            response = await self._client.request(self._encoder.session(key))
            token, expires_s = session_from(response, time.time())
            self._tokens[account] = (token, expires_s)
            return token
