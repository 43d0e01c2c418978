import orjson
import pytest

from ingest.edge.errors import (
    ApiError,
    InvalidRequest,
    ResourceMissing,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from ingest.edge.http import Request, error_response, error_response_v2


def _request(body: bytes, content_type: str | None, query: bytes = b"") -> Request:
    headers = {} if content_type is None else {"content-type": content_type}
    return Request("POST", "/v2/billing/meter_events", query, headers, body, "req_1")


def test_v1_and_v2_error_bodies() -> None:
    error = InvalidRequest("Bad.", code="no_meter", param="event_name")
    assert orjson.loads(error_response(error).body) == {
        "error": {"type": "invalid_request_error", "message": "Bad.", "code": "no_meter",
                  "param": "event_name"}
    }  # fmt: skip
    assert orjson.loads(error_response_v2(error).body) == {
        "error": {"type": "invalid_request_error", "code": "no_meter", "message": "Bad."}
    }
    missing = error_response_v2(ResourceMissing("Gone.", param="cancel[identifier]"))
    assert missing.status == 404
    assert orjson.loads(missing.body)["error"]["code"] == "not_found"  # v2's code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("Malformed."), "invalid_request"),
        (UnsupportedMediaType("XML."), "unsupported_media_type"),
        (ServiceUnavailable("Later.", headers={"Retry-After": "1"}), "service_unavailable"),
    ],
)
def test_v2_errors_always_carry_a_code_and_keep_headers(error: ApiError, code: str) -> None:
    response = error_response_v2(error)
    assert orjson.loads(response.body)["error"]["code"] == code
    assert response.headers == [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]


def test_json_params_takes_only_a_json_object_body() -> None:
    assert _request(b'{"a": {"b": "c"}}', "application/json; charset=utf-8").json_params() == {
        "a": {"b": "c"}
    }
    assert _request(b"", None).json_params() == {}
    with pytest.raises(UnsupportedMediaType):
        _request(b"a=b", "application/x-www-form-urlencoded").json_params()
    with pytest.raises(UnsupportedMediaType):
        _request(b'{"a": "b"}', None).json_params()
    with pytest.raises(InvalidRequest):
        _request(b'{"a": "b"}', "application/json", query=b"a=b").json_params()
    with pytest.raises(InvalidRequest):
        _request(b"[1]", "application/json").json_params()
