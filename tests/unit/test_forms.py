from typing import Any

import pytest

from ingest.edge.errors import InvalidRequest
from ingest.edge.forms import decode_json_object, decode_urlencoded


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"display_name=Alpaca+AI", {"display_name": "Alpaca AI"}),
        (
            b"default_aggregation%5Bformula%5D=sum&event_name=alpaca_ai_tokens",
            {"default_aggregation": {"formula": "sum"}, "event_name": "alpaca_ai_tokens"},
        ),
        (b"a[b][c]=1&a[b][d]=2", {"a": {"b": {"c": "1", "d": "2"}}}),
        (b"expand[]=x&expand[]=y", {"expand": ["x", "y"]}),
        (b"expand[0]=x&expand[1]=y", {"expand": ["x", "y"]}),
        (
            b"f[0][type]=customer&f[0][customer]=cus_1",
            {"f": [{"type": "customer", "customer": "cus_1"}]},
        ),
        (b"empty=", {"empty": ""}),
        (b"payload[value]=%E2%82%AC", {"payload": {"value": "\u20ac"}}),
    ],
)
def test_decodes_bracket_notation(raw: bytes, expected: dict[str, Any]) -> None:
    assert decode_urlencoded(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"a=1&a=2",  # the same key twice
        b"a=1&a[b]=2",  # a value and an object at once
        b"a[b]=1&a=2",
        b"a[0]=x&a[2]=y",  # gap in list indexes
        b"[x]=1",  # no name
        b"a[b=1",  # unclosed bracket
        b"a[b]c=1",  # text after a bracket
        b"a[]=1&a[x]=2",
        b"a[b][c][d][e][f][g]=1",  # too deep
        b"\xff=1",  # not UTF-8
    ],
)
def test_rejects_ambiguous_or_malformed_forms(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_urlencoded(raw)


def test_rejects_too_many_fields() -> None:
    with pytest.raises(InvalidRequest, match="Too many parameters"):
        decode_urlencoded(b"&".join(b"k%d=1" % i for i in range(1001)))


def test_json_must_be_an_object() -> None:
    assert decode_json_object(b'{"a": {"b": 1}}') == {"a": {"b": 1}}
    assert decode_json_object(b"  ") == {}
    for raw in (b"[1]", b'"x"', b"{", b"nul"):
        with pytest.raises(InvalidRequest):
            decode_json_object(raw)
