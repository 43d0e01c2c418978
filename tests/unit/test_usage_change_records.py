"""The usage-changes record contract: round trip, key, and junk refused."""

from __future__ import annotations

import orjson
import pytest

from meterflow.records.meter_events import RecordDecodeError
from meterflow.records.usage_changes import (
    UsageChange,
    decode_usage_change,
    encode_usage_change,
    usage_change_key,
)

CHANGE = UsageChange(
    "acct_1", True, "mtr_1", "cus_1", 1_700_000_000, 1_700_000_060, 1_700_000_061_5
)


@pytest.mark.parametrize("received", [1_700_000_061_123, None])
def test_round_trip(received: int | None) -> None:
    change = UsageChange("acct_1", False, "mtr_1", "cus_1", 100, 200, received)
    assert decode_usage_change(encode_usage_change(change)) == change


def test_key_names_account_mode_meter_and_customer() -> None:
    assert usage_change_key(CHANGE) == b"acct_1:live:mtr_1:cus_1"


def _document(**changes: object) -> bytes:
    doc = orjson.loads(encode_usage_change(CHANGE))
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v != "<drop>"})


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[]",
        b'{"v": 2}',
        _document(v=None),
        _document(account="<drop>"),
        _document(customer=""),
        _document(meter=7),
        _document(live="false"),
        _document(first_ts="100"),
        _document(last_ts=True),
        _document(first_ts=300, last_ts=200),
        _document(last_received_ms=1.5),
    ],
)
def test_junk_is_a_decode_error(raw: bytes | None) -> None:
    with pytest.raises(RecordDecodeError):
        decode_usage_change(raw)


def test_a_record_without_receipt_time_decodes() -> None:
    assert decode_usage_change(_document(last_received_ms="<drop>")).last_received_ms is None
