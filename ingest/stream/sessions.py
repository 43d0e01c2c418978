"""Issuing and checking meter event session tokens for ``meter_event_stream``.

The hot path (:meth:`SessionAuthority.authenticate`) verifies an HMAC with keys held in memory
and reads revocations from a per-account cache: no PostgreSQL round trip per request. A token
signed by a key this process has not loaded triggers one reload (at most once a second).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import AuthenticationFailed, SessionExpired
from ingest.stream.tokens import (
    SESSION_TTL_MS,
    SessionClaims,
    UnknownSigningKey,
    sign,
    verify,
)
from meterflow.ids import object_id

_RELOAD_MIN_INTERVAL_S = 1.0
MAX_CACHED_REVOCATIONS = 100_000


class SessionAuthority:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        revocation_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._revocation_ttl_s = revocation_ttl_s
        self._clock = clock
        self._secrets: dict[str, bytes] = {}
        self._signing_key: str | None = None
        self._loaded_at = -_RELOAD_MIN_INTERVAL_S
        self._revocations: dict[tuple[str, bool], tuple[int, float]] = {}

    async def load_keys(self) -> None:
        """Load every signing key, creating the first one when there is none."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO session_signing_keys (id, secret)
                   SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM session_signing_keys)
                   ON CONFLICT DO NOTHING""",
                object_id("msk", length=16),
                secrets.token_bytes(32),
            )
            rows = await conn.fetch(
                "SELECT id, secret FROM session_signing_keys ORDER BY created_at, id"
            )
        self._secrets = {r["id"]: bytes(r["secret"]) for r in rows}
        self._signing_key = rows[-1]["id"]
        self._loaded_at = self._clock()

    def issue(self, who: Principal) -> tuple[SessionClaims, str]:
        if self._signing_key is None:
            raise RuntimeError("load_keys() must run before sessions are issued")
        now_ms = int(self._clock() * 1000)
        claims = SessionClaims(
            account_id=who.account_id,
            livemode=who.livemode,
            session_id=object_id("mes", length=24),
            created_ms=now_ms,
            expires_ms=now_ms + SESSION_TTL_MS,
            key_id=self._signing_key,
        )
        return claims, sign(claims, self._secrets[self._signing_key])

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        now_ms = int(self._clock() * 1000)
        try:
            claims = verify(token, self._secrets, now_ms=now_ms)
        except UnknownSigningKey:
            if self._clock() - self._loaded_at < _RELOAD_MIN_INTERVAL_S:
                raise
            await self.load_keys()
            claims = verify(token, self._secrets, now_ms=now_ms)
        if claims.created_ms < await self._revoked_before(claims.account_id, claims.livemode):
            raise SessionExpired("The meter event session was revoked; create a new one.")
        return Principal(claims.account_id, claims.livemode)

    async def revoke(self, who: Principal) -> int:
        """Refuse every session of this account and mode created until now; returns that time."""
        now_ms = int(self._clock() * 1000)
        await self._pool.execute(
            """INSERT INTO session_revocations (account_id, livemode, revoked_before_ms)
               VALUES ($1, $2, $3)
               ON CONFLICT (account_id, livemode) DO UPDATE SET revoked_before_ms =
                   greatest(session_revocations.revoked_before_ms, EXCLUDED.revoked_before_ms)""",
            who.account_id,
            who.livemode,
            now_ms + 1,
        )
        self._revocations[(who.account_id, who.livemode)] = (now_ms + 1, self._clock())
        return now_ms

    async def _revoked_before(self, account_id: str, livemode: bool) -> int:
        key = (account_id, livemode)
        cached = self._revocations.get(key)
        now = self._clock()
        if cached is not None and now - cached[1] < self._revocation_ttl_s:
            return cached[0]
        value = await self._pool.fetchval(
            """SELECT revoked_before_ms FROM session_revocations
               WHERE account_id = $1 AND livemode = $2""",
            account_id,
            livemode,
        )
        revoked_before = int(value) if value is not None else 0
        if len(self._revocations) >= MAX_CACHED_REVOCATIONS:
            self._revocations.clear()
        self._revocations[key] = (revoked_before, now)
        return revoked_before


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "This endpoint takes a meter event session token: 'Authorization: Bearer <token>', "
            "where the token is the authentication_token of POST /v2/billing/meter_event_session."
        )
    if token.startswith(("sk_", "rk_")):
        raise AuthenticationFailed(
            "Secret keys are not accepted by meter_event_stream. Create a session with "
            "POST /v2/billing/meter_event_session and send its authentication_token instead."
        )
    return token
