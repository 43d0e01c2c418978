"""Candidate HTTP servers for meterflow's ingest endpoint (server-choice benchmark).

Every candidate does the same work per request: read the whole JSON POST body
(~10 KB, a Stripe v2-style ``{"events": [...]}`` batch), parse it with orjson,
and answer a small JSON body ``{"object": "...", "accepted": <n>}``.

Framework imports are done lazily inside the factories so that a process
serving one candidate does not pay (in RSS or start-up) for the others.

Targets (see run.sh):
  raw ASGI      uvicorn apps:raw_asgi_app            (also granian --interface asgi)
  starlette     uvicorn --factory apps:make_starlette_app
  RSGI          granian --interface rsgi apps:rsgi_app
  aiohttp       python apps.py aiohttp --port N      (uvloop event loop)
  ingest's      python apps.py uvicorn --protocol httptools|guarded --port N (project venv:
                uvicorn's own httptools protocol, or ingest's with its limits and deadlines)
"""

# Framework imports are deliberately lazy (inside the factories), see the module docstring.
# ruff: noqa: PLC0415
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    # These packages live only in the benchmark's throwaway venv (run.sh), not in the project's
    # venv; there mypy sees them as Any instead of failing.
    from aiohttp import web  # type: ignore[import-not-found, unused-ignore]
    from granian._granian import (  # type: ignore[import-not-found, unused-ignore]
        RSGIHTTPProtocol as HTTPProtocol,
    )
    from granian.rsgi import Scope as RSGIScope  # type: ignore[import-not-found, unused-ignore]
    from starlette.applications import (  # type: ignore[import-not-found, unused-ignore]
        Starlette,
    )
    from starlette.requests import Request  # type: ignore[import-not-found, unused-ignore]
    from starlette.responses import Response  # type: ignore[import-not-found, unused-ignore]

PATH = "/v2/billing/meter_event_stream"

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]

_JSON_HEADERS_ASGI: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
_JSON_HEADERS_RSGI: list[tuple[str, str]] = [("content-type", "application/json")]
_NOT_FOUND = orjson.dumps({"error": {"type": "invalid_request_error", "message": "not found"}})
_BAD_JSON = orjson.dumps({"error": {"type": "invalid_request_error", "message": "bad json"}})


def handle_body(body: bytes) -> tuple[int, bytes]:
    """The shared 'business logic': parse the batch, count events, build the answer."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, _BAD_JSON
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        return 400, _BAD_JSON
    return 200, orjson.dumps({"object": "v2.billing.meter_event_batch", "accepted": len(events)})


# --------------------------------------------------------------------------- raw ASGI (a, b, e)
async def raw_asgi_app(scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
    """A framework-free ASGI app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST" or scope["path"] != PATH:
        status, payload = 404, _NOT_FOUND
    else:
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        status, payload = handle_body(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS_ASGI})
    await send({"type": "http.response.body", "body": payload})


# --------------------------------------------------------------------------- starlette (c)
def make_starlette_app() -> Starlette:
    """A minimal Starlette app with one route (uvicorn --factory)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route  # type: ignore[import-not-found, unused-ignore]

    async def ingest(request: Request) -> Response:
        status, payload = handle_body(await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    return Starlette(routes=[Route(PATH, ingest, methods=["POST"])])


# --------------------------------------------------------------------------- granian RSGI (e)
async def rsgi_app(scope: RSGIScope, protocol: HTTPProtocol) -> None:
    """A framework-free RSGI app (granian's native interface)."""
    if scope.proto != "http":
        return
    if scope.method != "POST" or scope.path != PATH:
        protocol.response_bytes(404, _JSON_HEADERS_RSGI, _NOT_FOUND)
        return
    status, payload = handle_body(await protocol())
    protocol.response_bytes(status, _JSON_HEADERS_RSGI, payload)


# --------------------------------------------------------------------------- aiohttp (d)
def make_aiohttp_app() -> web.Application:
    """A minimal aiohttp.web application with one route."""
    from aiohttp import web

    async def ingest(request: web.Request) -> web.Response:
        status, payload = handle_body(await request.read())
        return web.Response(body=payload, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, ingest)
    return app


def run_aiohttp(host: str, port: int) -> None:
    """Serve the aiohttp app on a uvloop event loop, without access logging."""
    import uvloop
    from aiohttp import web

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        make_aiohttp_app(),
        host=host,
        port=port,
        access_log=None,
        print=None,
        loop=loop,
    )


# --------------------------------------------------------------------------- ingest's own (g)
def run_uvicorn(host: str, port: int, protocol: str) -> None:
    """The raw ASGI app on uvicorn as ingest runs it (project venv): uvicorn's httptools
    protocol, or ingest's guarded one with its default limits and deadlines (no metrics)."""
    import uvicorn

    config = uvicorn.Config(
        raw_asgi_app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
    )
    if protocol == "guarded":
        # By name (loadtest imports no process), from this checkout.
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        config.http = "ingest.edge.protocol:GuardedHttpToolsProtocol"
    uvicorn.Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server", choices=["aiohttp", "uvicorn"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["httptools", "guarded"], default="httptools")
    args = parser.parse_args()
    if args.server == "uvicorn":
        run_uvicorn(args.host, args.port, args.protocol)
    else:
        run_aiohttp(args.host, args.port)


if __name__ == "__main__":
    main()
