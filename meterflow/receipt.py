"""Receipt order: which of two events meterflow received last.

Events are ordered by ``(received_ms, receipt_batch, receipt_index)``: the receipt time, the id of
the request (or stream batch) that carried the event, and its position in it. Python compares the
batch ids as strings, by code point; SQL must compare them the same way whatever the database's
default collation, so every ORDER BY and row comparison on receipt order comes from here and
compares the batch id ``COLLATE "C"`` (bytewise, which for UTF-8 is code-point order).
"""

from __future__ import annotations

Receipt = tuple[int, str, int]  # (received_ms, receipt_batch, receipt_index)


def receipt_columns(prefix: str = "") -> str:
    """The receipt order as a SQL row value, e.g. for ``(…) > (…)``; ``prefix`` names the columns
    (``""`` for raw events, ``"last_"`` for a rollup's latest value, ``"r.last_"`` qualified)."""
    return f'({prefix}received_ms, {prefix}receipt_batch COLLATE "C", {prefix}receipt_index)'


def receipt_order(prefix: str = "", *, latest_first: bool = False) -> str:
    """The receipt order as ORDER BY terms, earliest first unless ``latest_first``."""
    way = " DESC" if latest_first else ""
    return (
        f'{prefix}received_ms{way}, {prefix}receipt_batch COLLATE "C"{way}, '
        f"{prefix}receipt_index{way}"
    )
