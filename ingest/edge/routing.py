"""Matching a method and path to an endpoint."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ingest.edge.auth import Principal
from ingest.edge.errors import UnknownRoute
from ingest.edge.http import Request, Response
from ingest.edge.rate_limits import LimitClass

AuthedHandler = Callable[[Request, Principal], Awaitable[Response]]
PublicHandler = Callable[[Request], Awaitable[Response]]

_SEGMENT = re.compile(r"\{(\w+)\}")
# A path parameter: up to 255 characters, no slash and no control character (PostgreSQL text
# cannot hold NUL, and no object id holds one), so such a path is an unknown URL, a 404.
_PARAMETER = r"[^/\x00-\x1f\x7f]{1,255}"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    handler: AuthedHandler | PublicHandler
    authenticated: bool = True
    # The rate limit the route counts against (see ingest.edge.rate_limits).
    limit_class: LimitClass = "api"

    @property
    def pattern(self) -> re.Pattern[str]:
        named = _SEGMENT.sub(lambda m: f"(?P<{m[1]}>{_PARAMETER})", self.template)
        return re.compile(f"^{named}$")


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path_params: dict[str, str]


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = [(route, route.pattern) for route in routes]

    @property
    def routes(self) -> list[Route]:
        return [route for route, _ in self._routes]

    def match(self, method: str, path: str) -> Match:
        """The route for ``method`` and ``path``. As with Stripe, a path served only with other
        methods is as unknown as any other URL: 404, never 405."""
        for route, pattern in self._routes:
            if route.method != method:
                continue
            found = pattern.match(path)
            if found is not None:
                return Match(route, found.groupdict())
        raise UnknownRoute(f"Unrecognized request URL ({method}: {path}).")
