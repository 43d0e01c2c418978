"""Which meter an event belongs to, cached per process so the hot path skips PostgreSQL.

Entries (misses included) live for ``ttl_s``: a meter created, deactivated or reactivated through
another process is seen within that time; changes made through this process are seen at once,
because the meters API calls :meth:`MeterDirectory.forget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ingest.edge.auth import Principal
from meterflow.meters import Meter

MAX_CACHED_METERS = 100_000


class MeterLookup(Protocol):
    async def by_event_name(self, who: Principal, event_name: str) -> Meter | None: ...


_Key = tuple[str, bool, str]


class MeterDirectory:
    def __init__(
        self,
        lookup: MeterLookup,
        *,
        ttl_s: float,
        max_entries: int = MAX_CACHED_METERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        # Insertion-ordered: the first entry is the oldest, evicted first when full.
        self._cache: dict[_Key, tuple[Meter | None, float]] = {}

    async def meter_for(self, who: Principal, event_name: str) -> Meter | None:
        key = (who.account_id, who.livemode, event_name)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        meter = await self._lookup.by_event_name(who, event_name)
        self._cache.pop(key, None)
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (meter, now + self._ttl_s)
        return meter

    def forget(self, who: Principal, event_name: str) -> None:
        """Drop a cached entry after this process changed the meter."""
        self._cache.pop((who.account_id, who.livemode, event_name), None)
