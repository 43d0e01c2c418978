"""A trivial local HTTP server that answers every request at once: the generator's own ceiling.

It parses requests with httptools (as uvicorn does) and answers ``200 {}``, or a fake session for
``POST /v2/billing/meter_event_session``. It runs in a child process on uvloop, bound to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import cast

import httptools
import uvloop

from deploy.ports import LOOPBACK
from loadtest.wire import V2_SESSION

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_SESSION_BODY = (
    b'{"object":"v2.billing.meter_event_session","id":"mes_noop","authentication_token":'
    b'"noop","created":"2024-06-01T12:00:00.000Z","expires_at":"2099-01-01T00:00:00.000Z",'
    b'"livemode":false}'
)
_SESSION = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_SESSION_BODY),
    _SESSION_BODY,
)
_START_TIMEOUT_S = 30.0


class _NoopProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._session = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._session = url == V2_SESSION.encode()

    def on_message_complete(self) -> None:
        if self._transport is not None:
            self._transport.write(_SESSION if self._session else _OK)


async def _serve(sock: socket.socket, stop: Connection) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_NoopProtocol, sock=sock)
    stopped = asyncio.Event()
    loop.add_reader(stop.fileno(), stopped.set)
    async with server:
        await stopped.wait()


def _child_main(sock: socket.socket, stop: Connection) -> None:
    uvloop.run(_serve(sock, stop))


@contextlib.contextmanager
def running_noop_server() -> Iterator[str]:
    """Serve in a child process until the block ends; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    stop_reader, stop_writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main, args=(sock, stop_reader), name="noop-http", daemon=True
    )
    process.start()
    sock.close()  # the child has its own copy
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        stop_writer.send(b"stop")
        process.join(_START_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
