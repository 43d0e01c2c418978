"""Consumer groups as ``meterflow consumers`` shows them: each group's offsets stored in
PostgreSQL (where it continues), the topic's end (how far there is to go), and which member of
the group holds each partition now, as Kafka's group coordinator says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from meterflow.kafka.positions import TopicUnavailable, end_offsets
from meterflow.kafka.security import PLAINTEXT, client_security
from meterflow.settings.roles import KafkaSecuritySettings
from meterflow.store.pg import Conn

_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    partition: int
    stored: int | None  # None: the group has folded nothing from it yet
    end: int
    owner: str | None  # the member holding it now, None when no member does

    @property
    def lag(self) -> int:
        return self.end - (self.stored or 0)


@dataclass(frozen=True, slots=True)
class GroupPositions:
    group: str
    topic: str
    state: str  # Kafka's: Stable, PreparingRebalance, Empty, Dead, …
    members: int
    partitions: tuple[PartitionPosition, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_document(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "state": self.state,
            "members": self.members,
            "lag": self.lag,
            "partitions": [
                {"partition": p.partition, "stored": p.stored, "end": p.end, "lag": p.lag,
                 "owner": p.owner}
                for p in self.partitions
            ],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Membership:
    state: str
    members: int
    owners: dict[tuple[str, int], str]  # (topic, partition) -> member


async def stored_positions(conn: Conn) -> dict[tuple[str, str], dict[int, int]]:
    """Every (group, topic) with stored offsets: ``{partition: next offset}``."""
    rows = await conn.fetch(
        """SELECT group_id, topic, partition, next_offset FROM consumer_offsets
           ORDER BY group_id, topic, partition"""
    )
    found: dict[tuple[str, str], dict[int, int]] = {}
    for r in rows:
        found.setdefault((r["group_id"], r["topic"]), {})[r["partition"]] = r["next_offset"]
    return found


def _member(member_id: str, client_id: str, host: str) -> str:
    # aiokafka member ids are "<client id>-<uuid>": the uuid's first block tells members apart.
    short = member_id.removeprefix(f"{client_id}-").split("-", 1)[0]
    return f"{client_id} {short} on {host.lstrip('/')}"


async def memberships(
    bootstrap_servers: str, groups: Iterable[str], security: KafkaSecuritySettings = PLAINTEXT
) -> dict[str, Membership]:
    """Each group's state, member count and who holds which partitions, from Kafka."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="meterflow-consumers",
        request_timeout_ms=int(_REQUEST_TIMEOUT_S * 1000),
        **client_security(security),
    )
    found: dict[str, Membership] = {}
    answers = []
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_S):
            await admin.start()
            # One group a request: aiokafka 0.14 cannot decode an answer describing several.
            for group in sorted(set(groups)):
                answers.extend(await admin.describe_consumer_groups([group]))
    except (KafkaError, TimeoutError) as exc:
        raise TopicUnavailable(f"cannot describe consumer groups: {exc!r}") from exc
    finally:
        await admin.close()
    for answer in answers:
        for described in answer.groups:
            _error, group, state, _protocol_type, _protocol, members = described[:6]
            owners: dict[tuple[str, int], str] = {}
            for member in members:
                member_id, client_id, host = member[0], member[1], member[2]
                raw_assignment = member[-1]
                if not raw_assignment:
                    continue
                assignment = ConsumerProtocolMemberAssignment.decode(raw_assignment)
                for topic, partitions in assignment.assignment:
                    for partition in partitions:
                        owners[(topic, partition)] = _member(member_id, client_id, host)
            found[group] = Membership(state, len(members), owners)
    return found


def positions_of(
    group: str,
    topic: str,
    stored: Mapping[int, int],
    ends: Mapping[int, int],
    membership: Membership | None,
) -> GroupPositions:
    owners = {} if membership is None else membership.owners
    partitions = tuple(
        PartitionPosition(p, stored.get(p), ends[p], owners.get((topic, p))) for p in sorted(ends)
    )
    return GroupPositions(
        group=group,
        topic=topic,
        state="Unknown" if membership is None else membership.state,
        members=0 if membership is None else membership.members,
        partitions=partitions,
    )


async def describe_groups(
    conn: Conn,
    consumer: AIOKafkaConsumer,
    bootstrap_servers: str,
    security: KafkaSecuritySettings = PLAINTEXT,
) -> list[GroupPositions]:
    """Every group with offsets stored in PostgreSQL, with its lag and owners."""
    stored = await stored_positions(conn)
    if not stored:
        return []
    members = await memberships(bootstrap_servers, {group for group, _topic in stored}, security)
    described = []
    for (group, topic), offsets in stored.items():
        try:
            ends = await end_offsets(consumer, topic)
        except TopicUnavailable:
            continue  # a test's or a deleted topic: its stored offsets mean nothing now
        described.append(positions_of(group, topic, offsets, ends, members.get(group)))
    return described
