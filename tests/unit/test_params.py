import pytest

from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params


def _error(exc: pytest.ExceptionInfo[InvalidRequest]) -> tuple[str | None, str | None]:
    return exc.value.code, exc.value.param


def test_reads_strings_choices_and_nested_objects() -> None:
    params = Params({"name": "x", "agg": {"formula": "sum"}, "limit": "5"})
    assert params.required_string("name", max_length=3) == "x"
    agg = params.object("agg", required=True)
    assert agg is not None
    assert agg.choice("formula", ("sum", "count"), required=True) == "sum"
    assert params.integer("limit", minimum=1, maximum=100) == 5
    params.finish()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ("parameter_missing", "name")),
        ({"name": ""}, ("parameter_invalid_empty", "name")),
        ({"name": "   "}, ("parameter_invalid_string_blank", "name")),
        ({"name": "abcd"}, ("string_too_long", "name")),
        ({"name": 5}, ("parameter_invalid", "name")),
        ({"name": {"a": "b"}}, ("parameter_invalid", "name")),
    ],
)
def test_string_errors_name_the_parameter(
    values: dict[str, object], expected: tuple[str, str]
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        Params(values).required_string("name", max_length=3)
    assert _error(exc) == expected


def test_unknown_parameters_are_named_with_their_full_path() -> None:
    params = Params({"agg": {"formula": "sum", "bogus": "1"}})
    agg = params.object("agg")
    assert agg is not None
    agg.choice("formula", ("sum",))
    with pytest.raises(InvalidRequest) as exc:
        params.finish()
    assert _error(exc) == ("parameter_unknown", "agg[bogus]")
    assert "agg[bogus]" in exc.value.message


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "0", "101", True, 1.0])
def test_integer_bounds_and_type(raw: object) -> None:
    with pytest.raises(InvalidRequest) as exc:
        Params({"limit": raw}).integer("limit", minimum=1, maximum=100)
    assert exc.value.code == "parameter_invalid_integer"


def test_choice_rejects_values_outside_the_enum() -> None:
    with pytest.raises(InvalidRequest) as exc:
        Params({"f": "max"}).choice("f", ("sum", "count", "last"))
    assert exc.value.message == "Invalid f: must be one of count, last, sum."


def test_expand_is_accepted_empty_and_refused_when_asking_for_something() -> None:
    Params({"expand": []}).no_expansion()
    with pytest.raises(InvalidRequest) as exc:
        Params({"expand": ["customer"]}).no_expansion()
    assert exc.value.param == "expand"


@pytest.mark.parametrize("items", [["\x00"], ["a", "b\x00c"], "\x00"])
def test_listed_strings_may_not_hold_nul(items: object) -> None:
    # PostgreSQL text cannot hold NUL: a listed value reaching a query would fail inside.
    with pytest.raises(InvalidRequest) as caught:
        Params({"types": items}).string_list("types")
    assert (caught.value.code, caught.value.param) == ("parameter_invalid", "types")
    assert Params({"types": ["a\tb"]}).string_list("types") == ["a\tb"]
