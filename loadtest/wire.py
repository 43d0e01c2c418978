"""Request bytes for the meterflow API, built with as little work per event as possible.

Everything but the body and its length is encoded once per (path, credential) and reused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote, urlencode, urlsplit

import orjson

from loadtest.traffic import CUSTOMER_KEY, VALUE_KEY, PlannedEvent

V1_EVENTS = "/v1/billing/meter_events"
V2_EVENTS = "/v2/billing/meter_events"
V2_SESSION = "/v2/billing/meter_event_session"
V2_STREAM = "/v2/billing/meter_event_stream"
METERS = "/v1/billing/meters"
JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"
_PAYLOAD_VALUE = quote(f"payload[{VALUE_KEY}]", safe="")
_PAYLOAD_CUSTOMER = quote(f"payload[{CUSTOMER_KEY}]", safe="")


def host_and_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"need an http:// URL, got {base_url!r}")
    return parts.hostname, parts.port or 80


@lru_cache(maxsize=4096)
def rfc3339(timestamp_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp_s))


def v2_event_document(event: PlannedEvent) -> dict[str, object]:
    return {
        "event_name": event.event_name,
        "payload": event.payload(),
        "identifier": event.identifier,
        "timestamp": rfc3339(event.timestamp_s),
    }


class RequestEncoder:
    """HTTP/1.1 keep-alive requests to one server."""

    def __init__(self, base_url: str) -> None:
        host, port = host_and_port(base_url)
        self._host = f"{host}:{port}".encode()
        self._prefixes: dict[tuple[bytes, str, bytes, str], bytes] = {}

    def _prefix(self, method: bytes, target: str, content_type: bytes, bearer: str) -> bytes:
        key = (method, target, content_type, bearer)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = b"%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n" % (
                method,
                target.encode(),
                self._host,
                bearer.encode(),
            )
            if content_type:
                prefix += b"Content-Type: %s\r\n" % content_type
            self._prefixes[key] = prefix
        return prefix

    def post(self, path: str, bearer: str, body: bytes, content_type: bytes = JSON) -> bytes:
        head = self._prefix(b"POST", path, content_type, bearer)
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def get(self, path: str, bearer: str, query: Mapping[str, str | int] | None = None) -> bytes:
        target = f"{path}?{urlencode(query)}" if query else path
        return b"GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n" % (
            target.encode(),
            self._host,
            bearer.encode(),
        )

    def v2_event(self, key: str, event: PlannedEvent) -> bytes:
        return self.post(V2_EVENTS, key, orjson.dumps(v2_event_document(event)))

    def v1_event(self, key: str, event: PlannedEvent) -> bytes:
        fields = [
            f"event_name={quote(event.event_name, safe='')}",
            f"identifier={quote(event.identifier, safe='')}",
            f"timestamp={event.timestamp_s}",
            f"{_PAYLOAD_VALUE}={quote(event.value, safe='')}",
        ]
        if event.customer is not None:
            fields.append(f"{_PAYLOAD_CUSTOMER}={quote(event.customer, safe='')}")
        return self.post(V1_EVENTS, key, "&".join(fields).encode(), FORM)

    def stream_batch(self, token: str, events: Sequence[PlannedEvent]) -> bytes:
        body = orjson.dumps({"events": [v2_event_document(e) for e in events]})
        return self.post(V2_STREAM, token, body)

    def session(self, key: str) -> bytes:
        return self.post(V2_SESSION, key, b"{}")

    def form(self, path: str, key: str, params: Iterable[tuple[str, str]]) -> bytes:
        return self.post(path, key, urlencode(list(params)).encode(), FORM)
