"""The ``created`` filter of Stripe's v1 lists: ``created=<s>`` (exactly) or any of
``created[gt|gte|lt|lte]=<s>``, unix seconds, all of which must hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ingest.edge.params import Params

Comparison = Literal["eq", "gt", "gte", "lt", "lte"]
CreatedBounds = tuple[tuple[Comparison, int], ...]
SQL_OPERATORS: dict[Comparison, str] = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_BOUNDS: tuple[Comparison, ...] = ("gt", "gte", "lt", "lte")


def created_bounds(params: Params, key: str = "created") -> CreatedBounds:
    """The bounds given in ``key``; an unknown bound (``created[foo]``) is refused when
    ``params`` finishes."""
    if not params.has(key):
        return ()
    if not isinstance(params.raw(key), Mapping):
        exact = params.integer(key, minimum=0)
        assert exact is not None  # noqa: S101 - present
        return (("eq", exact),)
    bounds = params.object(key)
    assert bounds is not None  # noqa: S101 - present
    found: list[tuple[Comparison, int]] = []
    for comparison in _BOUNDS:
        value = bounds.integer(comparison, minimum=0)
        if value is not None:
            found.append((comparison, value))
    return tuple(found)
