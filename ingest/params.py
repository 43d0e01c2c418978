"""Reading and validating decoded request parameters, with Stripe's error codes.

A :class:`Params` hands out the parameters an endpoint knows and then, in :meth:`Params.finish`,
rejects whatever is left, naming the first unknown parameter as Stripe does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from meterflow.errors import InvalidRequest


def missing_param(name: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required param: {name}.", code="parameter_missing", param=name)


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

    def string(
        self, key: str, *, required: bool = False, max_length: int | None = None
    ) -> str | None:
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
        return value

    def required_string(self, key: str, *, max_length: int | None = None) -> str:
        value = self.string(key, required=True, max_length=max_length)
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
        number: int
        if isinstance(value, bool):
            raise InvalidRequest(
                f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
            )
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value)
        else:
            raise InvalidRequest(
                f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
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
