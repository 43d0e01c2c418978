"""Decoding Stripe-style request parameters: form bodies and query strings in bracket notation.

``default_aggregation[formula]=sum`` becomes ``{"default_aggregation": {"formula": "sum"}}``;
``expand[]=a&expand[]=b`` and ``filters[0][type]=customer`` become lists. Anything ambiguous (a
key given twice, a key that is both a value and an object, gaps in list indexes) is rejected rather
than guessed at, so a request means exactly one thing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from meterflow.errors import InvalidRequest

MAX_FIELDS = 1000
MAX_DEPTH = 5


def _split_key(key: str) -> list[str]:
    """``a[b][0]`` -> ``["a", "b", "0"]``; ``a[]`` -> ``["a", ""]``."""
    head, bracket, rest = key.partition("[")
    if not head:
        raise InvalidRequest(f"Invalid parameter name: {key!r}.", code="parameter_unknown")
    parts = [head]
    if not bracket:
        return parts
    rest = "[" + rest
    while rest:
        if not rest.startswith("[") or "]" not in rest:
            raise InvalidRequest(f"Invalid parameter name: {key!r}.", code="parameter_unknown")
        inner, _, rest = rest[1:].partition("]")
        parts.append(inner)
    if len(parts) > MAX_DEPTH + 1:
        raise InvalidRequest(f"Parameter {key!r} is nested too deeply.", param=head)
    return parts


def _display(path: list[str]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:])


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
        raise InvalidRequest(f"Invalid parameter name: {_display(path)!r}.", param=path[0])
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
    if path and converted and all(k.isdigit() for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes != list(range(len(indexes))):
            raise InvalidRequest(
                f"Array parameter {path!r} must use consecutive indexes starting at 0.",
                param=path,
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
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
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
