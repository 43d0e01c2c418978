import pytest

from ingest.edge.auth import Principal
from ingest.edge.errors import UnknownRoute
from ingest.edge.http import Request, Response, json_response
from ingest.edge.routing import Route, Router


async def _handler(_request: Request, _who: Principal) -> Response:
    return json_response({})


ROUTER = Router(
    [
        Route("GET", "/v1/billing/meters", _handler),
        Route("POST", "/v1/billing/meters/{id}", _handler),
        Route("POST", "/v1/billing/meters/{id}/deactivate", _handler),
    ]
)


def test_matches_templates_and_extracts_ids() -> None:
    match = ROUTER.match("POST", "/v1/billing/meters/mtr_123/deactivate")
    assert match.route.template == "/v1/billing/meters/{id}/deactivate"
    assert match.path_params == {"id": "mtr_123"}


def test_unknown_path_is_404() -> None:
    with pytest.raises(UnknownRoute) as missing:
        ROUTER.match("GET", "/v1/nothing")
    assert missing.value.status == 404
    assert missing.value.message == "Unrecognized request URL (GET: /v1/nothing)."


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/billing/meters/mtr_1"),
        ("GET", "/v1/billing/meters/mtr_1/deactivate"),
        ("POST", "/v1/billing/meters"),
        ("PUT", "/v1/billing/meters/mtr_1"),
    ],
)
def test_a_known_path_with_another_method_is_an_unknown_url_as_with_stripe(
    method: str, path: str
) -> None:
    with pytest.raises(UnknownRoute) as wrong:
        ROUTER.match(method, path)
    assert wrong.value.status == 404
    assert wrong.value.message == f"Unrecognized request URL ({method}: {path})."
    assert wrong.value.headers == {}


def test_ids_cannot_span_segments_or_be_huge() -> None:
    with pytest.raises(UnknownRoute):
        ROUTER.match("POST", "/v1/billing/meters/a/b")
    with pytest.raises(UnknownRoute):
        ROUTER.match("POST", "/v1/billing/meters/" + "x" * 256)


@pytest.mark.parametrize("character", ["\x00", "\x1f", "\x7f", "\n"])
def test_ids_with_control_characters_are_unknown_urls(character: str) -> None:
    with pytest.raises(UnknownRoute):
        ROUTER.match("POST", f"/v1/billing/meters/mtr{character}1")
