"""The HTTP edge per connection: uvicorn's httptools protocol with size limits and deadlines.

uvicorn bounds neither the request head nor the time a client may take to send it, and answers a
request it cannot parse in plain text. :class:`GuardedHttpToolsProtocol` adds, per connection:

- limits on the request line (414) and on the request headers' bytes and number (431), checked
  as the head arrives, so an endless head costs at most one read buffer before it is refused;
- a deadline for the head, from the connection or from the first byte of the next request on a
  kept-alive one, and one for the body, from the end of the head (408); uvicorn's own idle
  keep-alive timeout stays;
- a limit on open connections: past it, a new connection's request gets 503 with
  ``Retry-After``, and the connection is closed.

Every refusal is answered in Stripe's error shape (v2's under ``/v2/``) with ``Connection: close``
and counted by reason. A request that arrives in one read, the usual case, arms no timer: a
deadline is armed only when a read ends with the head or the body incomplete.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ingest.edge.errors import (
    ApiError,
    HeadersTooLarge,
    InvalidRequest,
    RequestLineTooLong,
    RequestTimeout,
    ServiceUnavailable,
)
from ingest.edge.http import Response, error_response, error_response_v2
from ingest.edge.metrics import EdgeMetrics
from meterflow.ids import object_id
from meterflow.settings import IngestSettings

log = logging.getLogger("meterflow.ingest.edge")

RefusalReason = Literal[
    "request_line_too_long",
    "headers_too_large",
    "too_many_headers",
    "header_timeout",
    "body_timeout",
    "connection_limit",
    "malformed",
]
# Between the bytes counted exactly (URL, header names and values) and the bytes read: the method,
# the version, separators and line ends. A head over both limits plus this is refused unseen.
_HEAD_FRAMING_BYTES = 64


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_request_line_bytes: int
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @property
    def max_head_bytes(self) -> int:
        """The request line and the headers together, as read (framing included)."""
        return self.max_request_line_bytes + self.max_header_bytes + _HEAD_FRAMING_BYTES

    @classmethod
    def of(cls, ingest: IngestSettings) -> HttpLimits:
        return cls(
            max_request_line_bytes=ingest.max_request_line_bytes,
            max_header_bytes=ingest.max_header_bytes,
            max_header_count=ingest.max_header_count,
            header_timeout_s=ingest.header_timeout_s,
            body_timeout_s=ingest.body_timeout_s,
            max_connections=ingest.max_connections,
        )


class _Phase(enum.Enum):
    HEAD = "head"  # waiting for, or reading, a request line and headers
    BODY = "body"  # the head is in; the body is arriving
    IDLE = "idle"  # the request is read: uvicorn's keep-alive timeout takes over once answered


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is kept on the protocol."""


def guarded_protocol(limits: HttpLimits, metrics: EdgeMetrics) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``), bound to these limits."""

    class BoundProtocol(GuardedHttpToolsProtocol):
        http_limits = limits
        edge_metrics = metrics
        max_url_bytes = limits.max_request_line_bytes
        max_header_count = limits.max_header_count
        max_header_bytes = limits.max_header_bytes
        max_head_bytes = limits.max_head_bytes

    return BoundProtocol


_DEFAULTS = HttpLimits.of(IngestSettings())


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Unbound, the default limits and no metrics (``uvicorn.Config(http="ingest.edge.protocol:
    GuardedHttpToolsProtocol")``, as the server-choice benchmark runs it).

    Per request, the checks cost a few comparisons: the exact size of the headers is added up
    only for a head that spans reads or arrives in a large read.
    """

    http_limits: ClassVar[HttpLimits] = _DEFAULTS
    edge_metrics: ClassVar[EdgeMetrics | None] = None
    # The limits the per-request checks read, flattened.
    max_url_bytes: ClassVar[int] = _DEFAULTS.max_request_line_bytes
    max_header_count: ClassVar[int] = _DEFAULTS.max_header_count
    max_header_bytes: ClassVar[int] = _DEFAULTS.max_header_bytes
    max_head_bytes: ClassVar[int] = _DEFAULTS.max_head_bytes

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.url = b""
        self._phase = _Phase.HEAD
        self._deadline: asyncio.TimerHandle | None = None
        self._over_limit = False
        self._refusal: tuple[ApiError, RefusalReason] | None = None
        self._silent = True  # no request has begun on this connection yet
        self._read_bytes = 0  # of the read being parsed
        self._head_bytes = 0  # of the head so far, once it spans reads
        self._spans_reads = False

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Counted with this one. Refused once its head is read, so that the client, which is
        # still sending it, reads the answer instead of a reset.
        self._over_limit = len(self.connections) > self.http_limits.max_connections
        self._arm(self.http_limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._read_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # meterflow upgrades to nothing; the request was read as a plain one
        except httptools.HttpParserError:
            self._refuse(*(self._refusal or (_malformed(), "malformed")))
            return
        if self._phase is _Phase.IDLE or self.transport.is_closing():
            return  # the usual case: the whole request was in this read
        if self._phase is _Phase.HEAD:
            if self._spans_reads:
                self._head_bytes += len(data)
            else:  # the head's first read, which may hold the end of an earlier request
                self._head_bytes = len(self.url) + self._header_bytes()
                self._spans_reads = True
            # An endless head costs one read: what httptools holds of an unfinished header line
            # is in no count but the read's.
            if len(self.url) > self.max_url_bytes:
                self._refuse(*_url_too_long(self.http_limits))
                return
            if len(self.headers) > self.max_header_count:
                self._refuse(*_too_many_headers(self.http_limits))
                return
            if self._head_bytes > self.max_head_bytes:
                self._refuse(*_headers_too_large(self.http_limits))
                return
        if self._deadline is None:
            limits = self.http_limits
            is_head = self._phase is _Phase.HEAD
            self._arm(limits.header_timeout_s if is_head else limits.body_timeout_s)

    def send_400_response(self, msg: str) -> None:
        self._refuse(_malformed(), "malformed")

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._silent = False
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._spans_reads = False

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own, inlined (it runs for every header of every request), then the count.
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if len(self.headers) > self.max_header_count:
            self._stop(*_too_many_headers(self.http_limits))

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        if (
            self._over_limit
            or len(self.url) > self.max_url_bytes
            or self._spans_reads
            or self._read_bytes > self.max_header_bytes  # else the headers are within it
        ):
            self._check_head()
        self._phase = _Phase.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        self._phase = _Phase.IDLE
        super().on_message_complete()

    def _check_head(self) -> None:
        """Stop a complete head that breaks a limit, or that came past the connection limit."""
        if self._over_limit:
            self._stop(
                ServiceUnavailable(
                    "meterflow has too many open connections right now. Retry after the number "
                    "of seconds in the Retry-After header.",
                    headers={"Retry-After": "1"},
                ),
                "connection_limit",
            )
        if len(self.url) > self.max_url_bytes:
            self._stop(*_url_too_long(self.http_limits))
        if self._header_bytes() > self.max_header_bytes:
            self._stop(*_headers_too_large(self.http_limits))

    def _header_bytes(self) -> int:
        """The header lines parsed so far, exactly (but for trailing blanks of a value)."""
        return sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- deadlines and refusals ----------------------------------------------------------------

    def _arm(self, delay_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay_s, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._phase is _Phase.IDLE:
            return
        earlier = self.cycle
        if self.flow.read_paused or (
            self._phase is _Phase.HEAD and earlier is not None and not earlier.response_complete
        ):
            # meterflow is behind, not the client: it paused reading (a pipelined request waits,
            # or the body is not read yet), or it is still answering the request before.
            self._arm(self._timeout_of_phase())
            return
        if self._phase is _Phase.BODY:
            self._refuse(
                RequestTimeout(
                    "The request body did not arrive within "
                    f"{self.http_limits.body_timeout_s:g}s of its headers."
                ),
                "body_timeout",
            )
        elif self._silent:
            # A connection that never sent a byte: nothing to answer.
            self._count("header_timeout")
            self.transport.close()
        else:
            self._refuse(
                RequestTimeout(
                    "The request headers did not arrive within "
                    f"{self.http_limits.header_timeout_s:g}s."
                ),
                "header_timeout",
            )

    def _timeout_of_phase(self) -> float:
        limits = self.http_limits
        return limits.header_timeout_s if self._phase is _Phase.HEAD else limits.body_timeout_s

    def _stop(self, error: ApiError, reason: RefusalReason) -> None:
        self._refusal = (error, reason)
        raise _Refused(reason)

    def _refuse(self, error: ApiError, reason: RefusalReason) -> None:
        """Answer ``error`` and close; or only close, when an answer is already being sent."""
        self._count(reason)
        log.debug("refused a request (%s) from %s", reason, self.client)
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # half an answer is out: closing is the only refusal left
                return
            # A handler is still at work (on this request's body, or on an earlier request):
            # this answer ends the connection, so the handler's must not follow it.
            cycle.disconnected = True
            cycle.message_event.set()
        response = (
            error_response_v2(error) if self.url.startswith(b"/v2/") else error_response(error)
        )
        self.transport.write(self._serialized(response))
        self.transport.close()

    def _count(self, reason: RefusalReason) -> None:
        if self.edge_metrics is not None:
            self.edge_metrics.refusals.labels(reason).inc()

    def _serialized(self, response: Response) -> bytes:
        lines = [STATUS_LINE[response.status]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            (b"request-id", object_id("req", length=14).encode()),
            *response.headers,
            (b"connection", b"close"),
        ]
        lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
        lines.append(b"\r\n")
        lines.append(response.body)
        return b"".join(lines)


def _url_too_long(limits: HttpLimits) -> tuple[ApiError, RefusalReason]:
    return RequestLineTooLong(
        "The request line is too long: the URL may be at most "
        f"{limits.max_request_line_bytes} bytes."
    ), "request_line_too_long"


def _too_many_headers(limits: HttpLimits) -> tuple[ApiError, RefusalReason]:
    return HeadersTooLarge(
        f"Too many request headers: at most {limits.max_header_count} are allowed."
    ), "too_many_headers"


def _headers_too_large(limits: HttpLimits) -> tuple[ApiError, RefusalReason]:
    return HeadersTooLarge(
        f"The request headers are too large: at most {limits.max_header_bytes} bytes are allowed."
    ), "headers_too_large"


def _malformed() -> InvalidRequest:
    return InvalidRequest("Invalid HTTP request: it could not be parsed.")
