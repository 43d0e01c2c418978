"""One webhook POST over HTTP/1.1 with the standard library: connect, send, read the status.

A delivery needs only the status code of the answer, within a deadline; the body of the answer is
not read. The connection is closed after every request (``Connection: close``), redirects are not
followed (a 3xx is a failed attempt, as with Stripe), and the whole exchange, connecting included,
is bounded by one timeout. Only checked addresses are connected to (:mod:`meterflow.webhooks`),
and nothing the peer sends is ever recorded but its status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from meterflow.errors import MeterflowError
from meterflow.webhooks.addresses import Address, TargetRefused
from meterflow.webhooks.targets import TargetPolicy, TargetUnresolvable

USER_AGENT = "meterflow-webhooks/1"
NOT_HTTP = "connection closed: not an HTTP response"
PUBLIC_ONLY = TargetPolicy(allow_private=False)
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
    """``HTTP/1.1 200 OK`` -> 200; anything else is a failed attempt.

    The line is never quoted back: whatever a non-HTTP service says (an SSH or SMTP banner, a
    database's greeting) must not reach the delivery log, or the log becomes a port scanner.
    """
    version, _, rest = status_line.decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if (
        version not in ("HTTP/1.0", "HTTP/1.1")
        or len(code) != 3
        or not code.isdigit()
        or not 100 <= int(code) <= 599
    ):
        raise DeliveryFailed(NOT_HTTP)
    return int(code)


def _failure(exc: OSError) -> str:
    """A connection failure as a fixed class of error: never bytes the peer sent."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not valid: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return f"connection failed: {exc.strerror or type(exc).__name__}"


async def _connect(
    host: str, addresses: list[Address], port: int, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first of the checked ``addresses`` that answers, never resolving ``host``
    again; with TLS, ``host`` is still the name sent (SNI) and verified in the certificate."""
    failure: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(
                str(address),
                port,
                flags=socket.AI_NUMERICHOST,
                ssl=tls,
                server_hostname=host if tls else None,
                limit=_STREAM_LIMIT,
            )
        except ssl.SSLError:
            raise  # the next address would present the same certificate
        except OSError as exc:
            failure = exc
    assert failure is not None  # noqa: S101 - addresses is never empty
    raise failure


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    *,
    targets: TargetPolicy = PUBLIC_ONLY,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url``; return the status code or raise :class:`DeliveryFailed`.

    The host is resolved now, every address it resolves to is checked against ``targets``, and
    the connection goes to a checked address, so DNS that changed since the endpoint was
    registered cannot point a delivery at a private address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryFailed(f"not an http(s) URL: {url}")
    tls = (tls_context or _tls_context()) if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await targets.addresses(parts.hostname, port)
            reader, writer = await _connect(parts.hostname, addresses, port, tls)
            writer.write(request_bytes(url, body, headers))
            await writer.drain()
            line = await reader.readline()
    except TimeoutError as exc:
        raise DeliveryFailed(f"no answer within {timeout_s:g}s") from exc
    except TargetRefused as exc:
        raise DeliveryFailed(f"refused: {exc}") from exc
    except TargetUnresolvable as exc:
        raise DeliveryFailed(str(exc)) from exc
    except OSError as exc:  # ssl.SSLError included
        raise DeliveryFailed(_failure(exc)) from exc
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
