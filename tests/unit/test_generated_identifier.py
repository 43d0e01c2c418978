from ingest.events.api import generated_identifier


def test_sdk_retries_with_one_idempotency_key_get_one_identifier() -> None:
    first = generated_identifier("4f1c-retry-key")
    assert first == generated_identifier("4f1c-retry-key")
    assert first != generated_identifier("another-key")
    assert first.startswith("idk_")
    assert len(first) <= 100


def test_without_a_key_every_event_gets_a_fresh_identifier() -> None:
    assert generated_identifier(None) != generated_identifier(None)
    assert generated_identifier("") != generated_identifier("")
