"""Batch offsets as the offsets store records them: half-open spans per partition."""

from __future__ import annotations

import pytest

from meterflow.kafka.offsets import PartitionSpan, spans_of


@pytest.mark.parametrize(
    ("offsets", "spans"),
    [
        ({}, []),
        ({0: (0, 0)}, [PartitionSpan(0, 0, 1)]),
        ({3: (10, 19)}, [PartitionSpan(3, 10, 20)]),
        # In partition order, whatever order the batch came in.
        ({5: (7, 8), 1: (0, 4)}, [PartitionSpan(1, 0, 5), PartitionSpan(5, 7, 9)]),
    ],
)
def test_spans_cover_first_to_one_past_last(
    offsets: dict[int, tuple[int, int]], spans: list[PartitionSpan]
) -> None:
    assert spans_of(offsets) == spans
