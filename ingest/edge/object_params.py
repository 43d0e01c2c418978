"""Parameters every Stripe object shares: ``metadata``, booleans given as JSON or form text, and
an empty string that unsets an optional field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """Keys to set, and keys to remove (sent with an empty value)."""

    set: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)


def parse_metadata(params: Params) -> dict[str, str] | None:
    return params.string_map(
        "metadata",
        max_keys=MAX_METADATA_KEYS,
        max_key_length=MAX_METADATA_KEY,
        max_value_length=MAX_METADATA_VALUE,
    )


def parse_metadata_change(params: Params) -> MetadataChange:
    given = parse_metadata(params) or {}
    return MetadataChange(
        set={k: v for k, v in given.items() if v}, unset=[k for k, v in given.items() if not v]
    )


def take_unset(values: dict[str, Any], key: str) -> bool:
    """Remove ``key`` if it is an empty string, which unsets an optional field in Stripe's API."""
    if values.get(key) == "":
        del values[key]
        return True
    return False


def take_boolean(values: dict[str, Any], key: str) -> bool | None:
    """Remove and return a boolean given as JSON or as ``true``/``false`` in a form."""
    if key not in values:
        return None
    value = values.pop(key)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise InvalidRequest(
        f"Invalid boolean: {str(value)[:20]}", code="parameter_invalid_boolean", param=key
    )
