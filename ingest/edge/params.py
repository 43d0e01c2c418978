"""Reading and validating decoded request parameters, with Stripe's error codes.

A :class:`Params` hands out the parameters an endpoint knows and then, in :meth:`Params.finish`,
rejects whatever is left, naming the first unknown parameter as Stripe does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from ingest.edge.errors import InvalidRequest

# Integers as clients write them: ASCII digits, an optional minus, no spaces, no other signs.
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# C0 controls, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def missing_param(name: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required param: {name}.", code="parameter_missing", param=name)


def _excerpt(value: object) -> str:
    """A rejected value as an error message may show it: bounded, containers by kind."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def control_character(value: str, *, printable: bool) -> str | None:
    """The first character ``value`` may not hold, as ``U+XXXX``, or None.

    PostgreSQL text cannot hold NUL, so no string may carry one; identifiers and payloads
    (``printable``) take no control character at all.
    """
    if printable:
        if value.isprintable():  # C fast path: control characters are never printable
            return None
        found = _CONTROL.search(value)
        return None if found is None else f"U+{ord(found.group()):04X}"
    return "U+0000" if "\x00" in value else None


def _control_character_error(name: str, what: str, found: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid {what}: must not contain control characters (found {found}).",
        code="parameter_invalid",
        param=name,
    )


class Params:
    """Typed access to one level of decoded parameters; ``prefix`` names nested ones in errors."""

    def __init__(self, values: Mapping[str, Any], prefix: str = "") -> None:
        self._values = values
        self._prefix = prefix
        self._used: set[str] = set()
        self._children: list[Params] = []

    def name(self, key: str) -> str:
        return f"{self._prefix}[{key}]" if self._prefix else key

    def has(self, key: str) -> bool:
        return key in self._values

    def _take(self, key: str) -> Any:
        self._used.add(key)
        return self._values.get(key)

    def raw(self, key: str) -> Any:
        """The value as decoded, for a parameter of more than one type (a tier's ``up_to`` is an
        integer or ``inf``; ``tiers`` is a list, or a form's indexed map)."""
        return self._take(key)

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        max_length: int | None = None,
        printable: bool = False,
    ) -> str | None:
        """A string parameter; ``printable`` also refuses control characters (NUL always)."""
        value = self._take(key)
        name = self.name(key)
        if value is None:
            if required:
                raise missing_param(name)
            return None
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Invalid {name}: must be a string.", code="parameter_invalid", param=name
            )
        if value == "":
            raise InvalidRequest(
                f"You passed an empty string for '{name}'. We assume empty values are an attempt "
                f"to unset a parameter; however '{name}' cannot be unset. You should remove "
                f"'{name}' from your request or supply a non-empty value.",
                code="parameter_invalid_empty",
                param=name,
            )
        if not value.strip():
            raise InvalidRequest(
                f"Invalid {name}: must not be blank.",
                code="parameter_invalid_string_blank",
                param=name,
            )
        if max_length is not None and len(value) > max_length:
            raise InvalidRequest(
                f"Invalid {name}: must be at most {max_length} characters long.",
                code="string_too_long",
                param=name,
            )
        if (found := control_character(value, printable=printable)) is not None:
            raise _control_character_error(name, name, found)
        return value

    def required_string(
        self, key: str, *, max_length: int | None = None, printable: bool = False
    ) -> str:
        value = self.string(key, required=True, max_length=max_length, printable=printable)
        assert value is not None  # noqa: S101 - guaranteed by required=True
        return value

    def choice(self, key: str, choices: Collection[str], *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is not None and value not in choices:
            name = self.name(key)
            options = ", ".join(sorted(choices))
            raise InvalidRequest(
                f"Invalid {name}: must be one of {options}.", code="parameter_invalid", param=name
            )
        return value

    def integer(
        self, key: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self._take(key)
        name = self.name(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value):
            number = int(value)
        else:
            raise InvalidRequest(
                f"Invalid integer: {_excerpt(value)}", code="parameter_invalid_integer", param=name
            )
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise InvalidRequest(
                f"Invalid {name}: {_excerpt(value)} is out of range.",
                code="parameter_invalid_integer",
                param=name,
            )
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise InvalidRequest(
                f"Invalid {name}: must be between {minimum} and {maximum}.",
                code="parameter_invalid_integer",
                param=name,
            )
        return number

    def object(self, key: str, *, required: bool = False) -> Params | None:
        value = self._take(key)
        name = self.name(key)
        if value is None:
            if required:
                raise missing_param(name)
            return None
        if not isinstance(value, Mapping):
            raise InvalidRequest(
                f"Invalid {name}: must be an object (hash).", code="parameter_invalid", param=name
            )
        child = Params(value, name)
        self._children.append(child)
        return child

    def string_map(
        self,
        key: str,
        *,
        required: bool = False,
        max_keys: int,
        max_key_length: int,
        max_value_length: int,
        printable: bool = False,
    ) -> dict[str, str] | None:
        """A map of string to string, such as a meter event's ``payload``."""
        value = self._take(key)
        name = self.name(key)
        if value is None:
            if required:
                raise missing_param(name)
            return None
        if not isinstance(value, Mapping):
            raise InvalidRequest(
                f"Invalid {name}: must be an object (hash) of strings.",
                code="parameter_invalid",
                param=name,
            )
        if len(value) > max_keys:
            raise InvalidRequest(
                f"Invalid {name}: it has {len(value)} keys; at most {max_keys} are allowed.",
                code="parameter_invalid",
                param=name,
            )
        result: dict[str, str] = {}
        for k, v in value.items():
            entry = f"{name}[{k}]"
            if not k:
                raise InvalidRequest(
                    f"Invalid {name}: keys must not be empty.", code="parameter_invalid", param=name
                )
            if len(k) > max_key_length:
                raise InvalidRequest(
                    f"Invalid {name}: key {k[:40]!r}... is longer than {max_key_length} "
                    "characters.",
                    code="string_too_long",
                    param=name,
                )
            if (found := control_character(k, printable=printable)) is not None:
                raise _control_character_error(name, f"{name} key", found)
            if not isinstance(v, str):
                raise InvalidRequest(
                    f"Invalid {entry}: must be a string.", code="parameter_invalid", param=entry
                )
            if len(v) > max_value_length:
                raise InvalidRequest(
                    f"Invalid {entry}: must be at most {max_value_length} characters long.",
                    code="string_too_long",
                    param=entry,
                )
            if (found := control_character(v, printable=printable)) is not None:
                raise _control_character_error(entry, entry, found)
            result[k] = v
        return result

    def string_list(self, key: str) -> list[str]:
        value = self._take(key)
        name = self.name(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest(
                f"Invalid {name}: must be a list of strings.", code="parameter_invalid", param=name
            )
        for item in value:
            # Listed values are compared with stored text, which cannot hold NUL.
            if (found := control_character(item, printable=False)) is not None:
                raise _control_character_error(name, name, found)
        return list(value)

    def no_expansion(self) -> None:
        """Accept ``expand`` as Stripe's SDKs send it; nothing on these objects can expand."""
        paths = self.string_list("expand")
        if paths:
            raise InvalidRequest(
                f"This property cannot be expanded ({paths[0]}).",
                code="parameter_invalid",
                param="expand",
            )

    def finish(self) -> None:
        """Reject the first parameter nobody asked for, depth first."""
        for key in self._values:
            if key not in self._used:
                name = self.name(key)
                raise InvalidRequest(
                    f"Received unknown parameter: {name}", code="parameter_unknown", param=name
                )
        for child in self._children:
            child.finish()
