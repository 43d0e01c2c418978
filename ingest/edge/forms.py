"""Decoding Stripe-style request parameters: form bodies and query strings in bracket notation.

``default_aggregation[formula]=sum`` becomes ``{"default_aggregation": {"formula": "sum"}}``;
``expand[]=a&expand[]=b`` and ``filters[0][type]=customer`` become lists. Anything ambiguous (a
key given twice, a key that is both a value and an object, gaps in list indexes) is rejected rather
than guessed at, so a request means exactly one thing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ingest.edge.errors import InvalidRequest

MAX_FIELDS = 1000
MAX_DEPTH = 5
# A list index as a client writes it: ASCII digits without leading zeros, at most MAX_FIELDS.
_INDEX = re.compile(r"0|[1-9][0-9]{0,3}")


def _split_key(key: str) -> list[str]:
    """``a[b][0]`` -> ``["a", "b", "0"]``; ``a[]`` -> ``["a", ""]``."""
    head, bracket, rest = key.partition("[")
    if not head or "]" in head:
        raise InvalidRequest(
            f"Invalid parameter name: {_excerpt(key)!r}.", code="parameter_unknown"
        )
    if key.count("[") > MAX_DEPTH:
        # Counted before parsing: a megabyte of brackets must not cost a loop per bracket.
        raise InvalidRequest(
            f"Parameter {_excerpt(key)!r} is nested too deeply.", param=_excerpt(head, 200)
        )
    parts = [head]
    if not bracket:
        return parts
    rest = "[" + rest
    while rest:
        inner, closed, rest = rest[1:].partition("]")
        if not closed or "[" in inner or (rest and not rest.startswith("[")):
            raise InvalidRequest(
                f"Invalid parameter name: {_excerpt(key)!r}.", code="parameter_unknown"
            )
        parts.append(inner)
    return parts


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _display(path: list[str]) -> str:
    return _excerpt(path[0] + "".join(f"[{p}]" for p in path[1:]), 200)


def _insert(tree: dict[str, Any], path: list[str], value: str) -> None:
    node: dict[str, Any] = tree
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        child = node.get(part)
        if child is None:
            child = [] if nxt == "" else {}
            node[part] = child
        if isinstance(child, list):
            # Only a trailing "[]" appends to a list.
            if nxt != "" or depth + 1 != len(path) - 1:
                raise InvalidRequest(
                    f"Invalid array parameter {_display(path)!r}.", param=_display(path[:2])
                )
            child.append(value)
            return
        if not isinstance(child, dict):
            raise InvalidRequest(
                f"Parameter {_display(path[: depth + 1])!r} is given both as a value and as an "
                "object.",
                param=_display(path[: depth + 1]),
            )
        node = child
    last = path[-1]
    if last == "":
        raise InvalidRequest(
            f"Invalid parameter name: {_display(path)!r}.", param=_excerpt(path[0], 200)
        )
    if last in node:
        raise InvalidRequest(
            f"Parameter {_display(path)!r} is given more than once.", param=_display(path)
        )
    node[last] = value


def _listify(node: Any, path: str) -> Any:
    """Turn dicts keyed ``"0".."n-1"`` into lists, recursively."""
    if isinstance(node, list):
        return node
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v, f"{path}[{k}]" if path else k) for k, v in node.items()}
    if path and converted and all(_INDEX.fullmatch(k) for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes != list(range(len(indexes))):
            raise InvalidRequest(
                f"Array parameter {_excerpt(path)!r} must use consecutive indexes starting at 0.",
                param=_excerpt(path, 200),
            )
        return [converted[str(i)] for i in indexes]
    return converted


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    if len(pairs) > MAX_FIELDS:
        raise InvalidRequest(f"Too many parameters: at most {MAX_FIELDS} are accepted.")
    tree: dict[str, Any] = {}
    for key, value in pairs:
        _insert(tree, _split_key(key), value)
    result: dict[str, Any] = _listify(tree, "")
    return result


def decode_urlencoded(raw: bytes) -> dict[str, Any]:
    """Decode a form body or query string."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
        # errors="strict": a percent-encoded byte sequence that is not UTF-8 is refused, not
        # turned into U+FFFD and accepted as some other identifier or customer.
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request parameters are not valid UTF-8.") from exc
    except ValueError as exc:
        raise InvalidRequest(f"Too many parameters: at most {MAX_FIELDS} are accepted.") from exc
    return decode_pairs(pairs)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a JSON body, which must be an object."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value
