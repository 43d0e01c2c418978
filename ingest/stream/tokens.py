"""Meter event session tokens: signed, so any ingest process verifies them without PostgreSQL.

A token is ``mes_<claims>.<signature>``: the claims (account, mode, session id, creation and
expiry in unix milliseconds, signing key id) as base64url JSON, and an HMAC-SHA256 of them under
that key. Keys live in PostgreSQL and are loaded once per process (again when a token names a key
this process has not seen, which is how a rotation reaches every process).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from ingest.edge.errors import AuthenticationFailed, SessionExpired

TOKEN_PREFIX = "mes_"  # noqa: S105 - a public prefix, not a secret
SESSION_TTL_MS = 15 * 60 * 1000


@dataclass(frozen=True, slots=True)
class SessionClaims:
    account_id: str
    livemode: bool
    session_id: str
    created_ms: int
    expires_ms: int
    key_id: str


class UnknownSigningKey(AuthenticationFailed):
    """The token names a key this process has not loaded (yet)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, claims_part: str) -> str:
    return _b64(hmac.new(secret, claims_part.encode(), hashlib.sha256).digest())


def sign(claims: SessionClaims, secret: bytes) -> str:
    document = {
        "a": claims.account_id,
        "l": claims.livemode,
        "s": claims.session_id,
        "c": claims.created_ms,
        "e": claims.expires_ms,
        "k": claims.key_id,
    }
    claims_part = _b64(orjson.dumps(document))
    return f"{TOKEN_PREFIX}{claims_part}.{_mac(secret, claims_part)}"


def _invalid() -> AuthenticationFailed:
    return AuthenticationFailed(
        "Invalid meter event session token. Create a session with "
        "POST /v2/billing/meter_event_session and send its authentication_token as "
        "'Authorization: Bearer <token>'."
    )


def read_claims(token: str) -> tuple[SessionClaims, str, str]:
    """The unverified claims of a token, plus its claims part and signature (for :func:`verify`)."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 1:
        raise _invalid()
    claims_part, signature = token.removeprefix(TOKEN_PREFIX).split(".")
    try:
        doc: Any = orjson.loads(_unb64(claims_part))
        claims = SessionClaims(
            account_id=str(doc["a"]),
            livemode=bool(doc["l"]),
            session_id=str(doc["s"]),
            created_ms=int(doc["c"]),
            expires_ms=int(doc["e"]),
            key_id=str(doc["k"]),
        )
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _invalid() from exc
    return claims, claims_part, signature


def verify(token: str, secrets: dict[str, bytes], *, now_ms: int) -> SessionClaims:
    """Check the signature and expiry; raises a 401 error (:class:`SessionExpired` if expired)."""
    claims, claims_part, signature = read_claims(token)
    secret = secrets.get(claims.key_id)
    if secret is None:
        raise UnknownSigningKey("The session token was signed with an unknown key.")
    if not hmac.compare_digest(_mac(secret, claims_part), signature):
        raise _invalid()
    if now_ms >= claims.expires_ms:
        raise SessionExpired()
    return claims
