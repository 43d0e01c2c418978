"""The guarded HTTP protocol fed bytes directly, without sockets: how reads are cut must not
change what is refused (a head split into many reads, a large body in the head's read, a request
pipelined behind another)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.server import ServerState

from ingest.edge.metrics import EdgeMetrics
from ingest.edge.protocol import HttpLimits, guarded_protocol

LIMITS = HttpLimits(
    max_request_line_bytes=100,
    max_header_bytes=400,
    max_header_count=10,
    header_timeout_s=30.0,
    body_timeout_s=30.0,
    max_connections=100,
)
Message = MutableMapping[str, Any]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Served:
    """An app that reads each body and answers 200 with its length; remembers each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.requests.append((scope["path"], size))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
        )
        await send({"type": "http.response.body", "body": b""})


async def feed(*reads: bytes) -> tuple[Served, FakeTransport]:
    """A connection given ``reads`` one after another, each handled before the next."""
    app = Served()
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning")
    config.load()
    protocol_class = guarded_protocol(LIMITS, EdgeMetrics(CollectorRegistry(), lambda: 1))
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    for data in reads:
        protocol.data_received(data)
        for _ in range(5):  # let the request's task run to its answer
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return app, transport


def request(path: str = "/p", headers: int = 1, value: str = "v", body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", *(f"X-{i}: {value}" for i in range(headers))]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refused_with(transport: FakeTransport) -> int:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head
    assert b"connection: close" in head
    assert orjson.loads(body)["error"]["message"]
    assert transport.closed
    return int(head.split(b" ")[1])


async def test_a_head_split_into_single_bytes_is_served() -> None:
    whole = request(headers=8, value="v" * 30, body=b"abc")
    app, transport = await feed(*(whole[i : i + 1] for i in range(len(whole))))
    assert app.requests == [("/p", 3)]
    assert transport.written.startswith(b"HTTP/1.1 200")


async def test_a_large_body_in_the_heads_read_is_not_counted_as_headers() -> None:
    app, _ = await feed(request(body=b"b" * 100_000))
    assert app.requests == [("/p", 100_000)]


async def test_a_request_pipelined_behind_a_large_body_is_served() -> None:
    second = request("/second", headers=8, value="v" * 30)
    first = request("/first", body=b"b" * 5_000)
    app, _ = await feed(first + second[:20], second[20:])
    assert app.requests == [("/first", 5_000), ("/second", 0)]


@pytest.mark.parametrize("split", [False, True])
async def test_headers_at_the_limits_pass_and_past_them_are_431(split: bool) -> None:
    def reads(data: bytes) -> tuple[bytes, ...]:
        return (data[:30], data[30:]) if split else (data,)

    # Nine headers and Content-Length: ten, the limit.
    app, _ = await feed(*reads(request(headers=9)))
    assert app.requests == [("/p", 0)]
    app, transport = await feed(*reads(request(headers=10)))
    assert app.requests == []
    assert refused_with(transport) == 431
    # Nine lines of 3 + 35 bytes and Content-Length's 14 + 1, with ": " and CRLF: 397 of 400.
    app, _ = await feed(*reads(request(headers=9, value="v" * 35)))
    assert app.requests == [("/p", 0)]
    app, transport = await feed(*reads(request(headers=9, value="v" * 36)))
    assert app.requests == []
    assert refused_with(transport) == 431


@pytest.mark.parametrize("split", [False, True])
async def test_a_url_past_the_limit_is_414(split: bool) -> None:
    at_limit, over = request("/" + "u" * 99), request("/" + "u" * 100)
    app, _ = await feed(*((at_limit[:50], at_limit[50:]) if split else (at_limit,)))
    assert app.requests == [("/" + "u" * 99, 0)]
    app, transport = await feed(*((over[:50], over[50:]) if split else (over,)))
    assert app.requests == []
    assert refused_with(transport) == 414


async def test_an_endless_header_line_is_refused_after_one_read_past_the_limit() -> None:
    app, transport = await feed(b"GET /p HTTP/1.1\r\nX-Endless: ", *([b"a" * 256] * 4))
    assert app.requests == []
    assert refused_with(transport) == 431


async def test_an_unparsable_request_is_a_json_400() -> None:
    app, transport = await feed(b"GET /p HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    assert app.requests == []
    assert refused_with(transport) == 400
