"""The reference model of raw and pre-aggregated meters, table by table."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from tests.model.windows import (
    Bucket,
    Formula,
    Model,
    ModelEvent,
    ModelMeter,
    TimeWindow,
    UnknownIdentifier,
    aggregate,
    window_start,
)

DAY0 = 1_717_200_000  # 2024-06-01T00:00:00Z


def t(clock: str, day: int = 0) -> int:
    """``"12:50"`` or ``"12:50:59"`` on UTC day ``DAY0 + day`` as unix seconds."""
    hours, minutes, *seconds = (int(part) for part in clock.split(":"))
    return DAY0 + day * 86_400 + hours * 3600 + minutes * 60 + sum(seconds)


@dataclass(frozen=True)
class Send:
    identifier: str
    value: str
    at: int
    customer: str = "cus_1"
    meter: str = "m"


@dataclass(frozen=True)
class Cancel:
    identifier: str


@dataclass(frozen=True)
class Case:
    formula: Formula
    window: TimeWindow | None
    ops: tuple[Send | Cancel, ...]
    summaries: dict[tuple[int, int], str]  # [start, end) -> expected value
    buckets: dict[tuple[int, int, TimeWindow], list[tuple[int, str]]] = field(
        default_factory=dict
    )  # (start, end, window) -> [(bucket start, value)], newest first


def run(meter: ModelMeter, ops: tuple[Send | Cancel, ...], *others: ModelMeter) -> Model:
    model = Model([meter, *others])
    for op in ops:
        if isinstance(op, Send):
            model.accept(ModelEvent(op.identifier, op.meter, op.customer, Decimal(op.value), op.at))
        else:
            model.cancel(op.identifier)
    return model


HOUR_12 = (t("12:00"), t("13:00"))

CASES: dict[str, Case] = {
    "raw sum counts every event and a cancel removes one": Case(
        "sum",
        None,
        (
            Send("a", "5", t("12:10")),
            Send("b", "-2.5", t("12:50")),
            Send("c", "1", t("13:05")),
            Cancel("c"),
        ),
        {HOUR_12: "2.5", (t("12:00"), t("12:30")): "5", (t("13:00"), t("14:00")): "0"},
        {(t("00:00"), t("00:00", 1), "hour"): [(t("12:00"), "2.5")]},
    ),
    "raw last is the most recently received, whatever its timestamp": Case(
        "last",
        None,
        (Send("a", "1", t("12:50")), Send("b", "2", t("12:10")), Send("c", "3", t("13:30"))),
        {HOUR_12: "2", (t("12:00"), t("14:00")): "3", (t("12:30"), t("13:00")): "1"},
        {(t("12:00"), t("14:00"), "hour"): [(t("13:00"), "3"), (t("12:00"), "2")]},
    ),
    "raw count with a duplicate and a double cancel": Case(
        "count",
        None,
        (
            Send("a", "5", t("12:10")),
            Send("a", "5", t("12:10")),
            Send("b", "1", t("12:20")),
            Cancel("b"),
            Cancel("b"),
        ),
        {HOUR_12: "1"},
    ),
    "a later-received event with an earlier timestamp overwrites the window": Case(
        "sum",
        "hour",
        (Send("a", "5", t("12:50")), Send("b", "3", t("12:05"))),
        {HOUR_12: "3", (t("12:00"), t("12:30")): "3", (t("12:30"), t("13:00")): "0"},
        {(t("12:00"), t("13:00"), "hour"): [(t("12:00"), "3")]},
    ),
    "a late event lands in a past window without touching the current one": Case(
        "sum",
        "hour",
        (Send("a", "1", t("13:10")), Send("b", "2", t("12:20")), Send("c", "9", t("12:40"))),
        {HOUR_12: "9", (t("13:00"), t("14:00")): "1", (t("12:00"), t("14:00")): "10"},
        {(t("12:00"), t("14:00"), "hour"): [(t("13:00"), "1"), (t("12:00"), "9")]},
    ),
    "cancelling the survivor restores the previous event of the window": Case(
        "sum",
        "hour",
        (
            Send("a", "5", t("12:10")),
            Send("b", "7", t("12:50")),
            Send("c", "3", t("12:05")),
            Cancel("c"),
        ),
        {HOUR_12: "7", (t("12:00"), t("12:30")): "0", (t("12:30"), t("13:00")): "7"},
    ),
    "cancelling every event of a window leaves it empty and its bucket absent": Case(
        "count",
        "hour",
        (
            Send("a", "5", t("12:10")),
            Send("b", "7", t("12:50")),
            Cancel("b"),
            Cancel("a"),
            Send("c", "1", t("13:01")),
        ),
        {HOUR_12: "0", (t("12:00"), t("14:00")): "1"},
        {(t("12:00"), t("14:00"), "hour"): [(t("13:00"), "1")]},
    ),
    "cancelling an overwritten event changes nothing visible": Case(
        "sum",
        "hour",
        (Send("a", "5", t("12:10")), Send("b", "7", t("12:50")), Cancel("a")),
        {HOUR_12: "7", (t("12:00"), t("12:30")): "0"},
    ),
    "after an overwritten event is cancelled, cancelling the survivor empties the window": Case(
        "sum",
        "hour",
        (Send("a", "5", t("12:10")), Send("b", "7", t("12:50")), Cancel("a"), Cancel("b")),
        {HOUR_12: "0"},
        {(t("12:00"), t("13:00"), "hour"): []},
    ),
    "a duplicate of the survivor's identifier is ignored": Case(
        "sum",
        "hour",
        (Send("a", "5", t("12:10")), Send("a", "9", t("12:55"))),
        {HOUR_12: "5", (t("12:30"), t("13:00")): "0"},
    ),
    "a duplicate of an overwritten identifier does not make it the survivor again": Case(
        "last",
        "hour",
        (Send("a", "5", t("12:10")), Send("b", "7", t("12:50")), Send("a", "5", t("12:10"))),
        {HOUR_12: "7"},
    ),
    "last across windows picks the most recently received survivor": Case(
        "last",
        "hour",
        (Send("a", "10", t("12:10")), Send("b", "20", t("13:10")), Send("c", "30", t("12:20"))),
        {(t("12:00"), t("14:00")): "30", (t("13:00"), t("14:00")): "20"},
        {(t("12:00"), t("14:00"), "hour"): [(t("13:00"), "20"), (t("12:00"), "30")]},
    ),
    "last across windows falls back when the latest survivor is cancelled": Case(
        "last",
        "hour",
        (
            Send("a", "10", t("12:10")),
            Send("b", "20", t("13:10")),
            Send("c", "30", t("12:20")),
            Cancel("c"),
        ),
        {(t("12:00"), t("14:00")): "20", HOUR_12: "10"},
    ),
    "count of a windowed meter counts windows with a survivor in range": Case(
        "count",
        "hour",
        (
            Send("a", "1", t("12:10")),
            Send("b", "1", t("12:20")),
            Send("c", "1", t("13:59:59")),
            Send("d", "1", t("15:00")),
        ),
        {(t("12:00"), t("16:00")): "3", (t("12:00"), t("12:15")): "0", HOUR_12: "1"},
        {(t("00:00"), t("00:00", 1), "day"): [(t("00:00"), "3")]},
    ),
    "a day meter keeps one event per UTC day; hour buckets show the survivor's hour": Case(
        "sum",
        "day",
        (
            Send("a", "4", t("01:00")),
            Send("b", "6", t("23:59:59")),
            Send("c", "1.25", t("09:30")),
            Send("d", "2", t("00:00", 1)),
        ),
        {(t("00:00"), t("00:00", 2)): "3.25", (t("10:00"), t("00:00", 1)): "0"},
        {
            (t("00:00"), t("00:00", 2), "hour"): [(t("00:00", 1), "2"), (t("09:00"), "1.25")],
            (t("00:00"), t("00:00", 2), "day"): [(t("00:00", 1), "2"), (t("00:00"), "1.25")],
        },
    ),
    "windows are per customer": Case(
        "sum",
        "hour",
        (Send("a", "5", t("12:10"), "cus_1"), Send("b", "7", t("12:20"), "cus_2")),
        {HOUR_12: "5"},
    ),
    "sums are exact over mixed magnitudes": Case(
        "sum",
        None,
        (
            Send("a", "123456789012345", t("12:10")),
            Send("b", "0.00000000000001", t("12:11")),
            Send("c", "-123456789012345", t("12:12")),
        ),
        {HOUR_12: "0.00000000000001"},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_model_cases(case: Case) -> None:
    meter = ModelMeter("m", case.formula, case.window)
    model = run(meter, case.ops)
    for (start, end), expected in case.summaries.items():
        assert model.summary("m", "cus_1", start, end) == Decimal(expected), (start, end)
    for (start, end, window), buckets in case.buckets.items():
        step = 3600 if window == "hour" else 86_400
        assert model.buckets("m", "cus_1", start, end, window) == [
            Bucket(b, b + step, Decimal(v)) for b, v in buckets
        ], (start, end, window)


def test_readme_worked_example() -> None:
    """The "Pre-aggregated meters" example in the README, step by step."""
    hourly = ModelMeter("mtr_hourly", "sum", "hour")
    model = Model([hourly])

    def send(identifier: str, value: str, at: int) -> bool:
        return model.accept(ModelEvent(identifier, "mtr_hourly", "cus_A", Decimal(value), at))

    def summary(start: int, end: int) -> Decimal:
        return model.summary("mtr_hourly", "cus_A", start, end)

    assert send("e1", "5", t("12:10"))
    assert summary(*HOUR_12) == 5
    assert send("e2", "7", t("12:50"))
    assert summary(*HOUR_12) == 7
    assert send("e3", "3", t("12:05"))  # received last, so it survives despite the earlier time
    assert summary(*HOUR_12) == 3
    assert summary(t("12:30"), t("13:00")) == 0
    assert not send("e2", "100", t("12:59"))  # a duplicate: ignored
    assert summary(*HOUR_12) == 3
    assert send("e4", "4", t("13:20"))
    assert summary(t("12:00"), t("14:00")) == 7
    assert model.cancel("e3")  # the survivor: e2, received before it, counts again
    assert summary(*HOUR_12) == summary(t("12:30"), t("13:00")) == 7
    assert model.cancel("e1")  # overwritten: nothing visible changes
    assert not model.cancel("e1")
    assert summary(t("12:00"), t("14:00")) == 11
    assert model.buckets("mtr_hourly", "cus_A", t("12:00"), t("14:00"), "hour") == [
        Bucket(t("13:00"), t("14:00"), Decimal(4)),
        Bucket(t("12:00"), t("13:00"), Decimal(7)),
    ]
    counting = model.counting("mtr_hourly", "cus_A")
    assert [e.identifier for e in counting] == ["e2", "e4"]
    assert aggregate("count", counting) == 2
    assert aggregate("last", counting) == 4


def test_duplicates_are_ignored_across_meters() -> None:
    a, b = ModelMeter("a", "sum"), ModelMeter("b", "sum", "day")
    model = Model([a, b])
    assert model.accept(ModelEvent("x", "a", "cus_1", Decimal(1), t("12:00")))
    assert not model.accept(ModelEvent("x", "b", "cus_1", Decimal(2), t("12:00")))
    assert model.summary("b", "cus_1", t("00:00"), t("00:00", 1)) == 0
    assert model.event("x") == ModelEvent("x", "a", "cus_1", Decimal(1), t("12:00"))
    assert model.pairs() == [("a", "cus_1")]


def test_rejects_unknown_identifiers_meters_and_misaligned_ranges() -> None:
    model = Model([ModelMeter("m", "sum", "hour")])
    with pytest.raises(UnknownIdentifier):
        model.cancel("nope")
    with pytest.raises(KeyError):
        model.accept(ModelEvent("x", "other", "cus_1", Decimal(1), t("12:00")))
    for start, end in ((t("12:00") + 1, t("13:00")), (t("12:00"), t("12:00"))):
        with pytest.raises(ValueError, match="aligned"):
            model.summary("m", "cus_1", start, end)
    with pytest.raises(ValueError, match="aligned"):
        model.buckets("m", "cus_1", t("12:00"), t("13:00"), "day")


@pytest.mark.parametrize(
    ("timestamp", "window", "start"),
    [
        (t("12:00"), "hour", t("12:00")),
        (t("12:59:59"), "hour", t("12:00")),
        (t("13:00"), "hour", t("13:00")),
        (t("23:59:59"), "day", t("00:00")),
        (t("00:00", 1), "day", t("00:00", 1)),
    ],
)
def test_window_start_is_the_utc_window_containing_the_timestamp(
    timestamp: int, window: TimeWindow, start: int
) -> None:
    assert window_start(timestamp, window) == start
