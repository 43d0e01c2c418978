"""``GET /openapi.json``: the document for the routes the router serves, built once."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ingest.edge.http import Request, Response
from ingest.edge.routing import Route
from ingest.openapi.document import build_document

PATH = "/openapi.json"


class OpenApiEndpoint:
    def __init__(self, routes: Callable[[], list[Route]]) -> None:
        self._routes = routes
        self._body: bytes | None = None

    def route(self) -> Route:
        return Route("GET", PATH, self.serve, authenticated=False)

    async def serve(self, _request: Request) -> Response:
        if self._body is None:
            self._body = orjson.dumps(build_document(self._routes()))
        return Response(200, self._body)
