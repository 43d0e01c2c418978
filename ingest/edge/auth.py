"""Authenticating requests by secret key as Stripe does: Bearer, or Basic with the key as user.

Known keys are cached in process for a short TTL, so a busy client costs no database round trip
per request; a revoked key stops working within that TTL.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ingest.edge.errors import AuthenticationFailed
from meterflow.apikeys import display_hint, hash_key, key_shape

MAX_CACHED_KEYS = 100_000
_NEGATIVE_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every object read or written is scoped to this account and mode."""

    account_id: str
    livemode: bool


class KeyDirectory(Protocol):
    async def principal_for(self, key_hash: bytes) -> Principal | None: ...


def key_from_authorization(header: str | None) -> str:
    """The secret key in an ``Authorization`` header, or a 401 saying what is wrong."""
    if not header:
        raise AuthenticationFailed(
            "You did not provide an API key. Send it in the Authorization header as "
            "'Authorization: Bearer sk_test_...', or as the user name of HTTP Basic auth."
        )
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        key = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthenticationFailed(
                "Invalid HTTP Basic credentials: expected base64 of '<secret key>:'."
            ) from exc
        key = decoded.partition(":")[0]
    else:
        raise AuthenticationFailed(
            f"Unsupported authorization scheme {scheme!r}: use Bearer or Basic."
        )
    if not key:
        raise AuthenticationFailed("You did not provide an API key.")
    return key


class Authenticator:
    """Resolves keys to principals through a :class:`KeyDirectory`, with a TTL cache."""

    def __init__(
        self,
        directory: KeyDirectory,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        key = key_from_authorization(authorization)
        if key_shape(key) is None:
            raise AuthenticationFailed(f"Invalid API Key provided: {_hint(key)}")
        digest = hash_key(key)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            principal = await self._directory.principal_for(digest)
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            ttl = self._ttl_s if principal is not None else min(self._ttl_s, _NEGATIVE_TTL_S)
            self._cache[digest] = (principal, now + ttl)
        if principal is None:
            raise AuthenticationFailed(f"Invalid API Key provided: {display_hint(key)}")
        return principal


def _hint(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:8]}{'*' * 12}{key[-4:]}"
