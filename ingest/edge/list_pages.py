"""Stripe's v1 list pagination over tables ordered by an insertion sequence (``seq``).

Lists are newest first. ``starting_after`` pages towards older objects, ``ending_before`` towards
newer ones; both name an object id of the caller's account and mode. ``has_more`` is exact: one
row more than the page is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import ApiError, InvalidRequest
from ingest.edge.params import Params

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    starting_after: str | None
    ending_before: str | None

    @property
    def cursor(self) -> tuple[str, str] | None:
        """``(parameter name, object id)`` of the cursor, if one was given."""
        if self.starting_after:
            return "starting_after", self.starting_after
        if self.ending_before:
            return "ending_before", self.ending_before
        return None


def page_request(params: Params) -> PageRequest:
    """``limit`` (1..100, default 10), ``starting_after`` / ``ending_before`` (not both)."""
    limit = params.integer("limit", minimum=1, maximum=100) or 10
    starting_after = params.string("starting_after", max_length=255)
    ending_before = params.string("ending_before", max_length=255)
    if starting_after and ending_before:
        raise InvalidRequest(
            "You may only specify one of these parameters: ending_before, starting_after.",
            code="parameters_exclusive",
            param="ending_before",
        )
    return PageRequest(limit, starting_after, ending_before)


async def fetch_page(
    pool: asyncpg.Pool,
    who: Principal,
    page: PageRequest,
    *,
    table: str,
    columns: str,
    filters: dict[str, object] | None = None,
) -> tuple[list[asyncpg.Record], bool] | None:
    """One page of ``table`` rows of the caller, newest first, and whether more follow.

    ``None`` when the cursor names no object of the caller. ``table``, ``columns`` and the filter
    column names come from module constants of the callers, never from a request.
    """
    cursor_seq: int | None = None
    if page.cursor is not None:
        cursor_seq = await pool.fetchval(
            f"SELECT seq FROM {table} WHERE id = $1 AND account_id = $2 AND livemode = $3",
            page.cursor[1],
            who.account_id,
            who.livemode,
        )
        if cursor_seq is None:
            return None
    backwards = page.ending_before is not None
    args: list[object] = [who.account_id, who.livemode, page.limit + 1]
    conditions = ""
    if cursor_seq is not None:
        args.append(cursor_seq)
        conditions += f" AND seq {'>' if backwards else '<'} ${len(args)}"
    for column, value in (filters or {}).items():
        args.append(value)
        conditions += f" AND {column} = ${len(args)}"
    rows = await pool.fetch(
        f"""SELECT {columns} FROM {table}
            WHERE account_id = $1 AND livemode = $2{conditions}
            ORDER BY seq {"ASC" if backwards else "DESC"} LIMIT $3""",
        *args,
    )
    found = list(rows[: page.limit])
    if backwards:
        found.reverse()
    return found, len(rows) > page.limit


def list_object(data: list[dict[str, object]], has_more: bool, url: str) -> dict[str, object]:
    """Stripe's ``list`` object around one page of objects."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def found_page(
    page: tuple[list[T], bool] | None,
    request: PageRequest,
    missing: Callable[[str, str], ApiError],
) -> tuple[list[T], bool]:
    """A store's page, or the error for a cursor naming no object of the caller
    (``missing(object id, parameter)``)."""
    if page is None:
        assert request.cursor is not None  # noqa: S101 - only a cursor can miss
        param, cursor_id = request.cursor
        raise missing(cursor_id, param)
    return page
