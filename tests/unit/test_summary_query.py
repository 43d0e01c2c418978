from typing import Any

import pytest

from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params
from ingest.meters.summaries_api import bucket_start_of, parse_summary_query, summary_id

DAY = 1717200000  # 2024-06-01T00:00:00Z


def _query(**values: Any) -> dict[str, Any]:
    return {"customer": "cus_1", "start_time": str(DAY), "end_time": str(DAY + 86400), **values}


def test_minute_aligned_range_without_grouping() -> None:
    q = parse_summary_query(Params(_query(start_time=str(DAY + 60), end_time=str(DAY + 180))))
    assert (q.start_time, q.end_time, q.window_s, q.limit) == (DAY + 60, DAY + 180, None, 10)


@pytest.mark.parametrize(
    ("values", "param"),
    [
        ({"start_time": str(DAY + 1)}, "start_time"),
        ({"end_time": str(DAY + 61)}, "end_time"),
        ({"end_time": str(DAY)}, "end_time"),
        ({"start_time": str(DAY + 60), "value_grouping_window": "hour"}, "start_time"),
        ({"end_time": str(DAY + 3600), "value_grouping_window": "day"}, "end_time"),
        ({"value_grouping_window": "week"}, "value_grouping_window"),
        ({"customer": None}, "customer"),
        ({"start_time": None}, "start_time"),
        ({"start_time": "noon"}, "start_time"),
        ({"limit": "0"}, "limit"),
        ({"starting_after": "mtrusg_x", "ending_before": "mtrusg_y"}, "ending_before"),
        ({"starting_after": "mtr_123"}, "starting_after"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_errors_name_the_parameter(values: dict[str, Any], param: str) -> None:
    query = {k: v for k, v in _query(**values).items() if v is not None}
    with pytest.raises(InvalidRequest) as exc:
        parse_summary_query(Params(query))
    assert exc.value.param == param


def test_hour_and_day_windows_need_aligned_bounds() -> None:
    hourly = parse_summary_query(Params(_query(value_grouping_window="hour")))
    daily = parse_summary_query(Params(_query(value_grouping_window="day")))
    assert (hourly.window_s, daily.window_s) == (3600, 86400)


def test_summary_ids_encode_their_window_for_cursors() -> None:
    sid = summary_id("mtr_1", "cus_1", DAY, DAY + 3600)
    assert sid.startswith("mtrusg_")
    assert bucket_start_of(sid, "starting_after") == DAY
    assert summary_id("mtr_1", "cus_2", DAY, DAY + 3600) != sid
    q = parse_summary_query(Params(_query(value_grouping_window="hour", starting_after=sid)))
    assert q.starting_after == DAY
