"""One webhook POST over HTTP/1.1 with the standard library: connect, send, read the status.

A delivery needs only the status code of the answer, within a deadline; the body of the answer is
not read. The connection is closed after every request (``Connection: close``), redirects are not
followed (a 3xx is a failed attempt, as with Stripe), and the whole exchange, connecting included,
is bounded by one timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from meterflow.errors import MeterflowError

USER_AGENT = "meterflow-webhooks/1"
_STREAM_LIMIT = 8192  # bytes of the status line read at most


class DeliveryFailed(MeterflowError):
    """No HTTP answer came: the reason, as recorded in the delivery log."""

    retriable = True


def request_bytes(url: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The request as written on the wire (pure)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates verified against the system's trust store, built once per process."""
    return ssl.create_default_context()


def status_of(status_line: bytes) -> int:
    """``HTTP/1.1 200 OK`` -> 200; anything else is a failed attempt."""
    version, _, rest = status_line.decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise DeliveryFailed(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    return int(code)


async def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body`` to ``url``; return the status code or raise :class:`DeliveryFailed`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryFailed(f"not an http(s) URL: {url}")
    tls = _tls_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=tls, limit=_STREAM_LIMIT
            )
            writer.write(request_bytes(url, body, headers))
            await writer.drain()
            line = await reader.readline()
    except TimeoutError as exc:
        raise DeliveryFailed(f"no answer within {timeout_s:g}s") from exc
    except ConnectionRefusedError as exc:
        raise DeliveryFailed("connection refused") from exc
    except OSError as exc:  # ssl.SSLError included
        raise DeliveryFailed(f"connection failed: {exc}") from exc
    except ValueError as exc:  # the stream's line limit
        raise DeliveryFailed("status line too long") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    if not line:
        raise DeliveryFailed("connection closed without an answer")
    return status_of(line)
