from dataclasses import replace

from ingest.edge.auth import Principal
from ingest.meters.directory import MeterDirectory
from meterflow.meters import Meter

WHO = Principal("acct_1", livemode=False)
METER = Meter(
    seq=1,
    id="mtr_test_1",
    livemode=False,
    event_name="tokens",
    display_name="Tokens",
    formula="sum",
    customer_key="stripe_customer_id",
    value_key="value",
    event_time_window=None,
    status="active",
    created=0,
    updated=0,
    deactivated_at=None,
)


class FakeLookup:
    def __init__(self) -> None:
        self.meters: dict[tuple[str, bool, str], Meter] = {}
        self.queries = 0

    async def by_event_name(self, who: Principal, event_name: str) -> Meter | None:
        self.queries += 1
        return self.meters.get((who.account_id, who.livemode, event_name))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_hits_misses_and_expiry() -> None:
    lookup, clock = FakeLookup(), Clock()
    directory = MeterDirectory(lookup, ttl_s=1.0, clock=clock)
    assert await directory.meter_for(WHO, "tokens") is None
    lookup.meters[("acct_1", False, "tokens")] = METER
    # The miss is cached too: no query until it expires.
    assert await directory.meter_for(WHO, "tokens") is None
    assert lookup.queries == 1
    clock.now += 1.01
    assert await directory.meter_for(WHO, "tokens") == METER
    assert await directory.meter_for(WHO, "tokens") == METER
    assert lookup.queries == 2


async def test_accounts_and_modes_are_separate_entries() -> None:
    lookup = FakeLookup()
    lookup.meters[("acct_1", False, "tokens")] = METER
    directory = MeterDirectory(lookup, ttl_s=60.0)
    assert await directory.meter_for(WHO, "tokens") == METER
    assert await directory.meter_for(Principal("acct_1", livemode=True), "tokens") is None
    assert await directory.meter_for(Principal("acct_2", livemode=False), "tokens") is None


async def test_forget_sees_a_change_at_once() -> None:
    lookup = FakeLookup()
    lookup.meters[("acct_1", False, "tokens")] = METER
    directory = MeterDirectory(lookup, ttl_s=60.0)
    assert (await directory.meter_for(WHO, "tokens")) == METER
    lookup.meters[("acct_1", False, "tokens")] = replace(METER, status="inactive")
    directory.forget(WHO, "tokens")
    found = await directory.meter_for(WHO, "tokens")
    assert found is not None
    assert found.status == "inactive"


async def test_size_is_bounded_oldest_first() -> None:
    lookup = FakeLookup()
    directory = MeterDirectory(lookup, ttl_s=60.0, max_entries=2)
    for name in ("a", "b", "c"):
        await directory.meter_for(WHO, name)
    assert lookup.queries == 3
    await directory.meter_for(WHO, "c")
    await directory.meter_for(WHO, "b")
    assert lookup.queries == 3
    await directory.meter_for(WHO, "a")  # evicted when "c" arrived
    assert lookup.queries == 4
