"""Stripe's ``Idempotency-Key`` on POST requests.

The first request under a key runs and, when its outcome is final, its response is kept for
24 hours. A retry with the same request gets that response again, marked
``Idempotent-Replayed: true``, and the handler does not run. The same key on a different request
is a 400 ``idempotency_error``. While the first request is still running, a retry is a 409.

The pure part (key check, request fingerprint, which responses are kept, what a stored key means
for a new request) comes first; :class:`PgIdempotencyStore` keeps keys in PostgreSQL and
:class:`IdempotentRequests` runs a handler under a key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson

from ingest.edge.auth import Principal
from ingest.edge.errors import ApiError, Conflict, InvalidRequest
from ingest.edge.http import Request, Response
from ingest.edge.metrics import IdempotencyMetrics
from meterflow.store.outages import DATABASE_ERRORS

log = logging.getLogger("meterflow.ingest")

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
# Stripe keeps a key for at least 24 hours; older keys count as never used.
KEY_LIFETIME_MS = 24 * 60 * 60 * 1000
# A request still running after this long is taken to have died with its process, and another
# request may take the key over.
IN_PROGRESS_LEASE_MS = 60 * 1000
_CLAIM_ATTEMPTS = 3

# -- pure part ---------------------------------------------------------------------------------


class IdempotencyKeyReused(ApiError):
    """400: the key was first used for a different request."""

    error_type = "idempotency_error"


class IdempotencyKeyInUse(Conflict):
    """409: the first request under the key is still running; retry shortly."""

    error_type = "idempotency_error"
    retriable = True


def idempotency_key(request: Request) -> str | None:
    """The request's key, ``None`` when it has none; longer than 255 characters is a 400."""
    key = request.header(HEADER)
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"The Idempotency-Key header is {len(key)} characters long; keys can be at most "
            f"{MAX_KEY_LENGTH} characters."
        )
    return key


@dataclass(frozen=True, slots=True)
class RequestPrint:
    """What makes two requests the same request: method, path and a digest of the parameters."""

    method: str
    path: str
    fingerprint: bytes


def fingerprint(method: str, path: str, params: dict[str, Any]) -> bytes:
    """SHA-256 over the method, path and parameters, with keys in sorted order at every level.

    The parameters are the decoded ones, so a form body and a JSON body saying the same thing,
    or the same fields in another order, are the same request.
    """
    canonical = orjson.dumps([method, path, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).digest()


def raw_fingerprint(method: str, path: str, content_type: str, query: bytes, body: bytes) -> bytes:
    """For a request whose parameters do not decode: the exact bytes that were sent."""
    digest = hashlib.sha256(orjson.dumps([method, path, None, content_type, query.hex()]))
    digest.update(body)
    return digest.digest()


def request_print(request: Request) -> RequestPrint:
    try:
        digest = fingerprint(request.method, request.path, request.params())
    except ApiError:
        # The handler will reject it the same way; the retry must still match byte for byte.
        content_type = request.header("content-type") or ""
        digest = raw_fingerprint(
            request.method, request.path, content_type, request.query, request.body
        )
    return RequestPrint(request.method, request.path, digest)


def keeps_outcome(status: int) -> bool:
    """Whether a response is final and replayed to retries: 2xx and 4xx.

    Not 5xx (the client must be able to retry once the dependency is back), and not the 4xx
    that mean "try again later" or "who are you": 401, 409 and 429.
    """
    return 200 <= status < 300 or (400 <= status < 500 and status not in (401, 409, 429))


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @classmethod
    def of(cls, response: Response) -> StoredResponse:
        return cls(response.status, response.content_type, tuple(response.headers), response.body)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key already held: the request that holds it and, once it finished, its response."""

    request: RequestPrint
    owner_request: str
    response: StoredResponse | None


def replayable(stored: StoredKey, incoming: RequestPrint, key: str) -> StoredResponse:
    """The response to replay for ``incoming``, or the idempotency error it gets instead."""
    first = stored.request
    if (first.method, first.path) != (incoming.method, incoming.path):
        raise IdempotencyKeyReused(
            f"Idempotency key '{key}' was first used for {first.method} {first.path}, not for "
            f"{incoming.method} {incoming.path}. Use a new key for a different request."
        )
    if first.fingerprint != incoming.fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency key '{key}' was first used with different parameters. A key can only "
            "be reused with exactly the same parameters; use a new key for a different request."
        )
    if stored.response is None:
        raise IdempotencyKeyInUse(
            f"A request with idempotency key '{key}' is still in progress. Retry once it has "
            "finished to get its result.",
            code="idempotency_key_in_use",
        )
    return stored.response


REPLAYED_HEADER = (b"idempotent-replayed", b"true")


def replay(response: StoredResponse, original_request: str) -> Response:
    """The stored response again, byte for byte, marked as a replay of ``original_request``."""
    return Response(
        status=response.status,
        body=response.body,
        content_type=response.content_type,
        headers=[
            *response.headers,
            REPLAYED_HEADER,
            (b"original-request", original_request.encode()),
        ],
    )


# -- storage -----------------------------------------------------------------------------------


class IdempotencyStore(Protocol):
    async def claim(
        self, who: Principal, key: str, incoming: RequestPrint, owner: str, now_ms: int
    ) -> StoredKey | None:
        """Take the key for ``owner`` (``None``), or return who already holds it."""

    async def complete(
        self, who: Principal, key: str, owner: str, response: StoredResponse
    ) -> None: ...

    async def release(self, who: Principal, key: str, owner: str) -> None: ...


_CLAIM = """
INSERT INTO idempotency_keys AS k
    (account_id, livemode, idempotency_key, request_method, request_path, fingerprint,
     created_ms, owner_request, state)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'in_progress')
ON CONFLICT (account_id, livemode, idempotency_key) DO UPDATE SET
    request_method = EXCLUDED.request_method, request_path = EXCLUDED.request_path,
    fingerprint = EXCLUDED.fingerprint, created_ms = EXCLUDED.created_ms,
    owner_request = EXCLUDED.owner_request, state = 'in_progress', response_status = NULL,
    response_content_type = NULL, response_headers = NULL, response_body = NULL
-- Take over a key past its lifetime, or one whose request died before finishing.
WHERE k.created_ms <= $9 OR (k.state = 'in_progress' AND k.created_ms <= $10)
RETURNING true
"""

_HELD = """
SELECT request_method, request_path, fingerprint, owner_request, state, response_status,
       response_content_type, response_headers, response_body
FROM idempotency_keys WHERE account_id = $1 AND livemode = $2 AND idempotency_key = $3
"""

_COMPLETE = """
UPDATE idempotency_keys SET state = 'completed', response_status = $5,
    response_content_type = $6, response_headers = $7::jsonb, response_body = $8
WHERE account_id = $1 AND livemode = $2 AND idempotency_key = $3 AND owner_request = $4
"""

_RELEASE = """
DELETE FROM idempotency_keys
WHERE account_id = $1 AND livemode = $2 AND idempotency_key = $3 AND owner_request = $4
  AND state = 'in_progress'
"""


class PgIdempotencyStore:
    """Keys in ``idempotency_keys``: one round trip to take a free key, a second to read a held
    one."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, who: Principal, key: str, incoming: RequestPrint, owner: str, now_ms: int
    ) -> StoredKey | None:
        scope = (who.account_id, who.livemode, key)
        for _ in range(_CLAIM_ATTEMPTS):
            taken = await self._pool.fetchval(
                _CLAIM,
                *scope,
                incoming.method,
                incoming.path,
                incoming.fingerprint,
                now_ms,
                owner,
                now_ms - KEY_LIFETIME_MS,
                now_ms - IN_PROGRESS_LEASE_MS,
            )
            if taken:
                return None
            row = await self._pool.fetchrow(_HELD, *scope)
            if row is not None:
                return _stored_key(row)
            # Released or pruned between the two statements: try to take it again.
        # Still changing hands after that: as good as in progress, so the client retries.
        return StoredKey(incoming, owner_request="", response=None)

    async def complete(
        self, who: Principal, key: str, owner: str, response: StoredResponse
    ) -> None:
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in response.headers
        ]
        await self._pool.execute(
            _COMPLETE,
            who.account_id,
            who.livemode,
            key,
            owner,
            response.status,
            response.content_type.decode("latin-1"),
            orjson.dumps(headers).decode(),
            response.body,
        )

    async def release(self, who: Principal, key: str, owner: str) -> None:
        await self._pool.execute(_RELEASE, who.account_id, who.livemode, key, owner)


def _stored_key(row: asyncpg.Record) -> StoredKey:
    request = RequestPrint(row["request_method"], row["request_path"], row["fingerprint"])
    response = None
    if row["state"] == "completed":
        headers = orjson.loads(row["response_headers"])
        response = StoredResponse(
            status=row["response_status"],
            content_type=row["response_content_type"].encode("latin-1"),
            headers=tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in headers),
            body=row["response_body"],
        )
    return StoredKey(request, row["owner_request"], response)


# -- the request path --------------------------------------------------------------------------

Handler = Callable[[Request, Principal], Awaitable[Response]]
ErrorRenderer = Callable[[ApiError], Response]


class IdempotentRequests:
    """Runs an authenticated POST under its ``Idempotency-Key``."""

    def __init__(
        self,
        store: IdempotencyStore,
        metrics: IdempotencyMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock

    async def handle(
        self,
        request: Request,
        who: Principal,
        key: str,
        handler: Handler,
        render_error: ErrorRenderer,
    ) -> Response:
        incoming = request_print(request)
        owner = request.request_id
        held = await self._store.claim(who, key, incoming, owner, int(self._clock() * 1000))
        if held is not None:
            return self._answer_held(held, incoming, key)
        try:
            try:
                response = await handler(request, who)
            except ApiError as exc:
                response = render_error(exc)
        except BaseException:
            await self._store.release(who, key, owner)
            raise
        if not keeps_outcome(response.status):
            await self._store.release(who, key, owner)
            self._metrics.count("not_stored")
            return response
        try:
            await self._store.complete(who, key, owner, StoredResponse.of(response))
        except DATABASE_ERRORS:
            # The work is done: answer it. The key stays in progress until its lease runs out.
            log.exception("could not store the response for an idempotency key (%s)", owner)
        else:
            self._metrics.count("stored")
        return response

    def _answer_held(self, held: StoredKey, incoming: RequestPrint, key: str) -> Response:
        try:
            stored = replayable(held, incoming, key)
        except IdempotencyKeyInUse:
            self._metrics.count("in_progress")
            raise
        except IdempotencyKeyReused:
            self._metrics.count("mismatched")
            raise
        self._metrics.count("replayed")
        return replay(stored, held.owner_request)
