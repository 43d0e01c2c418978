"""Matching a method and path to an endpoint."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ingest.auth import Principal
from ingest.http import Request, Response
from meterflow.errors import MethodNotAllowed, UnknownRoute

AuthedHandler = Callable[[Request, Principal], Awaitable[Response]]
PublicHandler = Callable[[Request], Awaitable[Response]]

_SEGMENT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    handler: AuthedHandler | PublicHandler
    authenticated: bool = True

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + _SEGMENT.sub(r"(?P<\1>[^/]{1,255})", self.template) + "$")


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path_params: dict[str, str]


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = [(route, route.pattern) for route in routes]

    def match(self, method: str, path: str) -> Match:
        allowed: list[str] = []
        for route, pattern in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return Match(route, found.groupdict())
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(
                f"Unsupported method {method} for {path}: use {', '.join(sorted(allowed))}.",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise UnknownRoute(f"Unrecognized request URL ({method}: {path}).")
