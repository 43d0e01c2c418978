import base64

import pytest

from ingest.edge.auth import Authenticator, Principal, key_from_authorization
from ingest.edge.errors import AuthenticationFailed
from meterflow.apikeys import generate_secret_key, hash_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingDirectory:
    def __init__(self, keys: dict[bytes, Principal]) -> None:
        self.keys = keys
        self.lookups = 0

    async def principal_for(self, key_hash: bytes) -> Principal | None:
        self.lookups += 1
        return self.keys.get(key_hash)


def test_key_from_bearer_and_basic() -> None:
    key = generate_secret_key(livemode=False)
    assert key_from_authorization(f"Bearer {key}") == key
    assert key_from_authorization(f"bearer  {key} ") == key
    basic = base64.b64encode(f"{key}:".encode()).decode()
    assert key_from_authorization(f"Basic {basic}") == key


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Token abc", "Basic !!!", "Basic " + "Og=="]
)
def test_missing_or_malformed_authorization_is_401(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as exc:
        key_from_authorization(header)
    assert exc.value.status == 401
    assert exc.value.body()["error"]["type"] == "invalid_request_error"


async def test_known_keys_are_cached_until_the_ttl() -> None:
    key = generate_secret_key(livemode=True)
    principal = Principal("acct_1", livemode=True)
    directory = CountingDirectory({hash_key(key): principal})
    clock = FakeClock()
    auth = Authenticator(directory, ttl_s=30.0, clock=clock)
    assert await auth.authenticate(f"Bearer {key}") == principal
    assert await auth.authenticate(f"Bearer {key}") == principal
    assert directory.lookups == 1
    clock.now += 31
    assert await auth.authenticate(f"Bearer {key}") == principal
    assert directory.lookups == 2


async def test_unknown_and_malformed_keys_are_refused_without_leaking_them() -> None:
    directory = CountingDirectory({})
    auth = Authenticator(directory, ttl_s=30.0, clock=FakeClock())
    unknown = generate_secret_key(livemode=False)
    with pytest.raises(AuthenticationFailed) as exc:
        await auth.authenticate(f"Bearer {unknown}")
    assert unknown not in exc.value.message
    assert unknown[-4:] in exc.value.message
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate("Bearer pk_test_abcdefghijklmnop")
    assert directory.lookups == 1  # a malformed key never reaches the directory
