from meterflow.apikeys import display_hint, generate_secret_key, hash_key, key_shape
from meterflow.ids import object_id


def test_keys_carry_their_mode() -> None:
    test_key = generate_secret_key(livemode=False)
    live_key = generate_secret_key(livemode=True)
    assert test_key.startswith("sk_test_")
    assert live_key.startswith("sk_live_")
    assert key_shape(test_key) is not None
    assert key_shape(test_key) == key_shape(test_key)
    shape_test, shape_live = key_shape(test_key), key_shape(live_key)
    assert shape_test is not None
    assert shape_live is not None
    assert (shape_test.livemode, shape_live.livemode) == (False, True)
    assert generate_secret_key(livemode=False) != test_key


def test_malformed_keys_have_no_shape() -> None:
    for key in ("", "sk_test_", "pk_test_abcdefghijkl", "sk_test_abc def ghijk", "sk_test_short"):
        assert key_shape(key) is None, key


def test_hash_is_stable_and_hint_hides_the_key() -> None:
    key = generate_secret_key(livemode=False)
    assert hash_key(key) == hash_key(key)
    assert len(hash_key(key)) == 32
    hint = display_hint(key)
    assert hint.startswith("sk_test_")
    assert hint.endswith(key[-4:])
    assert key[8:-4] not in hint


def test_object_ids_are_shaped_like_stripes() -> None:
    assert object_id("mtr", livemode=False).startswith("mtr_test_")
    assert not object_id("mtr", livemode=True).startswith("mtr_test_")
    assert len(object_id("req", length=14)) == len("req_") + 14
