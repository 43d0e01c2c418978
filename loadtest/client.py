"""A lean HTTP/1.1 keep-alive client: one connection, one request in flight, httptools parsing.

Requests arrive as ready-made bytes (see :mod:`loadtest.wire`); the answer is the status and the
body. Anything that leaves the outcome unknown (refused, reset, timed out, unparsable) raises
:class:`TransportError`, and the connection is dropped and reopened by the next request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import httptools
import orjson

from meterflow.errors import MeterflowError


class TransportError(MeterflowError):
    """No usable answer: the request may or may not have reached the server."""

    retriable = True


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after_s: float | None = None

    def error_code(self) -> str | None:
        """``error.code`` of a Stripe-shaped error body, if there is one."""
        try:
            document = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        error = document.get("error") if isinstance(document, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else None

    def json(self) -> object:
        return orjson.loads(self.body)


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._chunks: list[bytes] = []
        self._retry_after: bytes | None = None
        self.open = False

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"unparsable response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(TransportError(f"connection lost: {exc or 'closed by the server'}"))

    # httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._chunks = []
        self._retry_after = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        response = HttpResponse(
            self._parser.get_status_code(), b"".join(self._chunks), _seconds(self._retry_after)
        )
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not self._parser.should_keep_alive():
            self.close()

    # ---------------------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[HttpResponse]:
        if self._transport is None or not self.open:
            raise TransportError("connection is closed")
        if self._waiter is not None:
            raise RuntimeError("one request at a time per connection")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        self._waiter = waiter
        # A timer handle rather than asyncio.wait_for: no extra task per request.
        self._timer = loop.call_later(self._timeout_s, self._time_out)
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def _time_out(self) -> None:
        self._timer = None
        self._fail(TransportError(f"no answer within {self._timeout_s:g}s"))
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: TransportError) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class HttpClient:
    """One keep-alive connection to ``host:port``, reopened on demand."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None

    async def connect(self) -> None:
        if self._connection is not None and self._connection.open:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self._timeout_s), self._host, self._port
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self._host}:{self._port}: {exc!r}") from exc
        self._connection = protocol

    async def request(self, data: bytes) -> HttpResponse:
        await self.connect()
        assert self._connection is not None  # noqa: S101 - connect() set it
        try:
            return await self._connection.send(data)
        except TransportError:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _seconds(value: bytes | None) -> float | None:
    """A ``Retry-After`` given in seconds (the HTTP-date form is not used by meterflow)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
