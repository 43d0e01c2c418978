"""Stripe's v1 and v2 APIs name an unknown object differently: ``resource_missing`` in v1,
``not_found`` in v2; both keep ``invalid_request_error`` as the type."""

from __future__ import annotations

import orjson

from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import error_response, error_response_v2


def test_an_unknown_object_is_not_found_in_v2_and_resource_missing_in_v1() -> None:
    missing = ResourceMissing("No such v2.core.event: 'evt_test_x'")
    v2 = error_response_v2(missing)
    assert v2.status == 404
    assert orjson.loads(v2.body) == {
        "error": {
            "type": "invalid_request_error",
            "code": "not_found",
            "message": "No such v2.core.event: 'evt_test_x'",
        }
    }
    v1 = orjson.loads(error_response(missing).body)["error"]
    assert (v1["type"], v1["code"], v1["param"]) == (
        "invalid_request_error",
        "resource_missing",
        "id",
    )


def test_other_codes_are_the_same_in_both_versions() -> None:
    error = InvalidRequest("dup", code="duplicate_meter_event")
    assert orjson.loads(error_response_v2(error).body)["error"]["code"] == "duplicate_meter_event"
    assert orjson.loads(error_response(error).body)["error"]["code"] == "duplicate_meter_event"
