"""One line of an import file, checked as ``POST /v1/billing/meter_events`` checks a request
(pure: no I/O here).

Fields are Stripe's: ``event_name``, ``timestamp`` (unix seconds, or an RFC 3339 time),
``identifier`` and the payload. A CSV file names them in its header line, the payload's keys as
``payload.<key>`` columns, and leaves a cell empty for a field or key it does not give; a JSON
Lines file has one object per line, with ``payload`` an object of strings. A line that breaks a
rule becomes a :class:`RowError` with the code the API would answer (``parameter_missing``,
``string_too_long``, ``no_meter``, ``payload_invalid_value``, ``timestamp_too_far_in_past``, …).

An event without an identifier gets one derived from the import and its line, so an import that
is resumed, or run again, sends the same identifiers and the aggregator counts each line once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from meterflow.errors import MeterflowError
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.rules.events import (
    MAX_EVENT_NAME,
    MAX_IDENTIFIER,
    MAX_PAYLOAD_KEY_LENGTH,
    MAX_PAYLOAD_KEYS,
    MAX_PAYLOAD_VALUE_LENGTH,
    EventRuleFailure,
    parse_rfc3339,
)
from meterflow.rules.meter_events import SYNC_WORDING, apply_event_rules

PAYLOAD_PREFIX = "payload."
FIELDS = ("event_name", "timestamp", "identifier")
_JSON_FIELDS = frozenset((*FIELDS, "payload"))
# C0 controls, DEL and C1 controls: what the API refuses in names, identifiers and payloads.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ImportRefused(MeterflowError):
    """The file cannot be imported at all (its header, its format)."""


class RowError(NamedTuple):
    line: int
    code: str
    message: str
    param: str | None


def generated_identifier(import_id: str, line: int) -> str:
    digest = hashlib.blake2b(f"{import_id}:{line}".encode(), digest_size=16).hexdigest()
    return f"imp_{digest}"


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Where each field is in a CSV row, from the header."""

    width: int
    event_name: int
    timestamp: int | None
    identifier: int | None
    payload: tuple[tuple[str, int], ...]  # (key, column)


def csv_layout(header: Sequence[str]) -> CsvLayout:
    """The layout the header names; :class:`ImportRefused` for a column it cannot mean."""
    columns: dict[str, int] = {}
    payload: list[tuple[str, int]] = []
    for index, name in enumerate(header):
        if name in columns or any(key == name[len(PAYLOAD_PREFIX) :] for key, _ in payload):
            raise ImportRefused(f"the header names column {name!r} twice")
        if name.startswith(PAYLOAD_PREFIX) and len(name) > len(PAYLOAD_PREFIX):
            key = name[len(PAYLOAD_PREFIX) :]
            if len(key) > MAX_PAYLOAD_KEY_LENGTH or not key.isprintable():
                raise ImportRefused(f"the payload key of column {name[:60]!r} is not allowed")
            payload.append((key, index))
        elif name in FIELDS:
            columns[name] = index
        else:
            raise ImportRefused(
                f"unknown column {name[:60]!r}: the header takes event_name, timestamp, "
                "identifier and payload.<key> columns"
            )
    if "event_name" not in columns:
        raise ImportRefused("the header has no event_name column")
    if len(payload) > MAX_PAYLOAD_KEYS:
        raise ImportRefused(f"the header has {len(payload)} payload columns; at most 50")
    return CsvLayout(
        width=len(header),
        event_name=columns["event_name"],
        timestamp=columns.get("timestamp"),
        identifier=columns.get("identifier"),
        payload=tuple(payload),
    )


class RowChecker:
    """Checks lines of one import against the account's meters, as of ``now_s``."""

    def __init__(self, import_id: str, meters: Mapping[str, Meter], now_s: int) -> None:
        self._import_id = import_id
        self._meters = meters
        self.now_s = now_s

    def csv_row(self, row: Sequence[str], layout: CsvLayout, line: int) -> AcceptedEvent | RowError:
        if len(row) != layout.width:
            return RowError(
                line, "parameter_invalid",
                f"The line has {len(row)} fields; the header has {layout.width}.", None,
            )  # fmt: skip
        payload = {key: row[i] for key, i in layout.payload if row[i]}
        timestamp = row[layout.timestamp] if layout.timestamp is not None else ""
        identifier = row[layout.identifier] if layout.identifier is not None else ""
        return self._event(line, row[layout.event_name], payload, identifier, timestamp)

    def json_line(self, raw: bytes, line: int) -> AcceptedEvent | RowError:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return RowError(line, "parameter_invalid", "The line is not a JSON object.", None)
        if not isinstance(document, dict):
            return RowError(line, "parameter_invalid", "The line is not a JSON object.", None)
        unknown = sorted(set(document) - _JSON_FIELDS)
        if unknown:
            name = unknown[0][:40]
            return RowError(
                line, "parameter_unknown", f"Received unknown parameter: {name}", name
            )  # fmt: skip
        payload = document.get("payload")
        if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
            return RowError(
                line, "parameter_missing" if payload is None else "parameter_invalid",
                "payload is required: an object of strings.", "payload",
            )  # fmt: skip
        texts: dict[str, str] = {}
        for name in FIELDS:
            value = document.get(name)
            integer = isinstance(value, int) and not isinstance(value, bool)
            if value is None:
                texts[name] = ""
            elif isinstance(value, str) or (integer and name == "timestamp"):
                texts[name] = str(value)
            else:
                return RowError(
                    line, "parameter_invalid", f"Invalid {name}: must be a string.", name
                )  # fmt: skip
        return self._event(
            line, texts["event_name"], payload, texts["identifier"], texts["timestamp"]
        )

    def _event(
        self, line: int, event_name: str, payload: dict[str, str], identifier: str, timestamp: str
    ) -> AcceptedEvent | RowError:
        shape = _shape_error(line, event_name, payload, identifier)
        if shape is not None:
            return shape
        if not timestamp:
            timestamp_s = None
        elif timestamp.isdigit():
            timestamp_s = int(timestamp)
        else:
            try:
                timestamp_s = parse_rfc3339(timestamp)
            except ValueError:
                return RowError(
                    line, "parameter_invalid",
                    f"Invalid timestamp: {timestamp[:40]!r} is neither unix seconds nor an RFC "
                    "3339 date-time.", "timestamp",
                )  # fmt: skip
        outcome = apply_event_rules(
            self._meters.get(event_name),
            event_name,
            payload,
            identifier or generated_identifier(self._import_id, line),
            timestamp_s,
            now_s=self.now_s,
            wording=SYNC_WORDING,
        )
        if isinstance(outcome, EventRuleFailure):
            return RowError(line, outcome.sync_code, outcome.message, outcome.param)
        return outcome


def _shape_error(
    line: int, event_name: str, payload: dict[str, str], identifier: str
) -> RowError | None:
    """The API's parameter checks: presence, lengths, then characters."""
    if not event_name:
        return RowError(line, "parameter_missing", "Missing required param: event_name.",
                        "event_name")  # fmt: skip
    too_long = _length_error(event_name, payload, identifier)
    if too_long is not None:
        return RowError(line, *too_long)
    # One C-level check for the common case; control characters are never printable.
    text = event_name + identifier + "".join(payload) + "".join(payload.values())
    if text.isprintable():
        return None
    if _CONTROL.search(text):
        return RowError(line, "parameter_invalid",
                        "Invalid parameters: must not contain control characters.",
                        _control_param(event_name, payload, identifier))  # fmt: skip
    if _SURROGATE.search(text):  # bytes of the file that are not UTF-8, kept as surrogates
        return RowError(line, "parameter_invalid", "The line is not valid UTF-8.", None)
    return None


def _length_error(
    event_name: str, payload: dict[str, str], identifier: str
) -> tuple[str, str, str] | None:
    """(code, message, param) of the first field over its limit."""
    if len(event_name) > MAX_EVENT_NAME:
        return ("string_too_long",
                f"Invalid event_name: must be at most {MAX_EVENT_NAME} characters long.",
                "event_name")  # fmt: skip
    if len(identifier) > MAX_IDENTIFIER:
        return ("string_too_long",
                f"Invalid identifier: must be at most {MAX_IDENTIFIER} characters long.",
                "identifier")  # fmt: skip
    if len(payload) > MAX_PAYLOAD_KEYS:
        return ("parameter_invalid",
                f"Invalid payload: it has {len(payload)} keys; at most {MAX_PAYLOAD_KEYS} are "
                "allowed.", "payload")  # fmt: skip
    for key, value in payload.items():
        if not key or len(key) > MAX_PAYLOAD_KEY_LENGTH:
            return ("parameter_invalid", "Invalid payload: a key is empty or too long.",
                    "payload")  # fmt: skip
        if len(value) > MAX_PAYLOAD_VALUE_LENGTH:
            return ("string_too_long",
                    f"Invalid payload[{key}]: must be at most {MAX_PAYLOAD_VALUE_LENGTH} "
                    "characters long.", f"payload[{key}]")  # fmt: skip
    return None


def _control_param(event_name: str, payload: dict[str, str], identifier: str) -> str:
    if _CONTROL.search(event_name):
        return "event_name"
    if _CONTROL.search(identifier):
        return "identifier"
    for key, value in payload.items():
        if _CONTROL.search(key + value):
            return f"payload[{key}]"
    return "payload"


def reject_line(error: RowError, source: str | Sequence[str]) -> bytes:
    """A line of the reject file (JSON Lines): where, why, and the line as it was (a CSV line as
    its fields)."""
    document: dict[str, Any] = {
        "line": error.line,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "source": _readable(source) if isinstance(source, str) else list(map(_readable, source)),
    }
    return orjson.dumps(document) + b"\n"


def _readable(text: str) -> str:
    """``text`` with bytes that were not UTF-8 shown as U+FFFD, which JSON can carry."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
