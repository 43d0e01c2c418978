"""The invoice endpoints' pure parts: the list's filters, paying out of band only, and the
ledger entries that give a voided invoice's credits back."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.billing.invoices.params import NO_PAYMENTS, parse_invoice_list, parse_pay
from ingest.billing.invoices.reinstatement import AppliedEntry, reinstatements
from ingest.edge.errors import InvalidRequest
from meterflow.billing.ledger import LedgerEntry

NOW = 1_800_000_000


def _applied(entry: str, grant: str, amount: int, line: str = "il_1") -> AppliedEntry:
    return AppliedEntry(entry, "cus_1", grant, amount, "usd", "in_1", line)


def _back(entry: str, grant: str, amount: int, line: str = "il_1") -> LedgerEntry:
    return LedgerEntry(
        customer="cus_1",
        grant=grant,
        reason="credits_application_invoice_voided",
        amount=amount,
        currency="usd",
        effective_at=NOW,
        dedupe_key=f"reinstated:{entry}",
        invoice="in_1",
        invoice_line=line,
    )


def _expire(entry: str, grant: str, amount: int) -> LedgerEntry:
    return LedgerEntry(
        customer="cus_1",
        grant=grant,
        reason="credits_expired",
        amount=amount,
        currency="usd",
        effective_at=NOW,
        dedupe_key=f"expired:reinstated:{entry}",
    )


@pytest.mark.parametrize(
    ("applied", "expires_at", "expected"),
    [
        ([], {}, []),
        ([_applied("a", "g1", 300)], {"g1": None}, [_back("a", "g1", 300)]),
        # Expired by now (an expiry at this very second counts): back, then expired at once.
        (
            [_applied("a", "g1", 300)],
            {"g1": NOW},
            [_back("a", "g1", 300), _expire("a", "g1", 300)],
        ),
        ([_applied("a", "g1", 300)], {"g1": NOW + 1}, [_back("a", "g1", 300)]),
        (
            [_applied("a", "g1", 250), _applied("b", "g2", 150), _applied("c", "g1", 40, "il_2")],
            {"g1": None, "g2": NOW - 60},
            [
                _back("a", "g1", 250),
                _back("b", "g2", 150),
                _expire("b", "g2", 150),
                _back("c", "g1", 40, "il_2"),
            ],
        ),
    ],
)
def test_a_void_gives_each_application_back_and_expires_what_an_expired_grant_gets(
    applied: list[AppliedEntry], expires_at: dict[str, int | None], expected: list[LedgerEntry]
) -> None:
    entries = reinstatements(applied, expires_at, NOW)
    assert entries == expected
    assert all(e.type == ("credit" if e.reason != "credits_expired" else "debit") for e in entries)


@pytest.mark.parametrize(
    ("values", "code", "param"),
    [
        ({}, "parameter_missing", "paid_out_of_band"),
        ({"paid_out_of_band": "false"}, "parameter_invalid", "paid_out_of_band"),
        ({"paid_out_of_band": False}, "parameter_invalid", "paid_out_of_band"),
        ({"paid_out_of_band": "yes"}, "parameter_invalid_boolean", "paid_out_of_band"),
        ({"paid_out_of_band": "true", "payment_method": "pm_1"}, "parameter_unknown",
         "payment_method"),
        ({"paid_out_of_band": "true", "forgive": "true"}, "parameter_unknown", "forgive"),
        ({"paid_out_of_band": "true", "amount": "5"}, "parameter_unknown", "amount"),
        ({"paid_out_of_band": "true", "expand": ["charge"]}, "parameter_invalid", "expand"),
    ],
)  # fmt: skip
def test_paying_takes_paid_out_of_band_true_and_nothing_that_collects(
    values: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_pay(values)
    assert (exc.value.code, exc.value.param) == (code, param)
    if code in ("parameter_missing", "parameter_invalid") and param != "expand":
        assert exc.value.message == NO_PAYMENTS


@pytest.mark.parametrize("values", [{"paid_out_of_band": "true"}, {"paid_out_of_band": True}])
def test_paying_out_of_band_is_accepted_from_a_form_or_json(values: dict[str, Any]) -> None:
    parse_pay(values)


def test_the_list_reads_its_filters() -> None:
    query = parse_invoice_list(
        {
            "customer": "cus_1",
            "subscription": "sub_1",
            "status": "open",
            "created": {"gte": "10", "lt": "20"},
            "limit": "3",
            "starting_after": "in_1",
        }
    )
    assert (query.customer, query.subscription, query.status) == ("cus_1", "sub_1", "open")
    assert query.created == (("gte", 10), ("lt", 20))
    assert (query.page.limit, query.page.starting_after) == (3, "in_1")
    assert parse_invoice_list({"created": "15"}).created == (("eq", 15),)
    empty = parse_invoice_list({})
    assert (empty.customer, empty.status, empty.created, empty.page.limit) == (None, None, (), 10)


@pytest.mark.parametrize(
    ("values", "code", "param"),
    [
        ({"status": "uncollected"}, "parameter_invalid", "status"),
        ({"created": {"after": "1"}}, "parameter_unknown", "created[after]"),
        ({"created": {"gt": "soon"}}, "parameter_invalid_integer", "created[gt]"),
        ({"created": "-5"}, "parameter_invalid_integer", "created"),
        ({"created": ["1"]}, "parameter_invalid_integer", "created"),
        ({"customer": ""}, "parameter_invalid_empty", "customer"),
        ({"due_date": "1"}, "parameter_unknown", "due_date"),
    ],
)
def test_the_list_refuses_bad_filters(values: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_invoice_list(values)
    assert (exc.value.code, exc.value.param) == (code, param)
