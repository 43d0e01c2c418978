"""Reading a topic the user may not read ends in a meterflow error the CLI can print, not a
traceback."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from meterflow.kafka.positions import TopicAccessDenied, read_ranges


class _RefusingConsumer:
    """Stands in for a consumer whose broker refuses the fetch, as an ACL-less user's would."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def getmany(self, *partitions: TopicPartition, **options: Any) -> dict[Any, Any]:
        raise TopicAuthorizationFailedError()


async def test_a_refused_read_names_the_topic_and_the_fix() -> None:
    consumer = cast(AIOKafkaConsumer, _RefusingConsumer())
    with pytest.raises(TopicAccessDenied, match=r"read t\.rejected: grant it Read") as caught:
        async for _batch in read_ranges(consumer, "t.rejected", {0: (0, 5)}, max_records=10):
            pass
    assert not caught.value.retriable
