"""Secret API keys: their shape, generation and the digest under which they are stored."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

_ALPHABET = string.ascii_letters + string.digits
_BODY_LENGTH = 48  # ~285 bits of randomness; Stripe's own secret keys are of similar length.
TEST_PREFIX = "sk_test_"
LIVE_PREFIX = "sk_live_"


@dataclass(frozen=True, slots=True)
class KeyShape:
    """What a key says about itself before any lookup."""

    livemode: bool


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_secret_key(*, livemode: bool) -> str:
    return (LIVE_PREFIX if livemode else TEST_PREFIX) + random_token(_BODY_LENGTH)


def key_shape(key: str) -> KeyShape | None:
    """``sk_test_…`` / ``sk_live_…`` with a plausible body, else ``None``."""
    for prefix, livemode in ((TEST_PREFIX, False), (LIVE_PREFIX, True)):
        if key.startswith(prefix):
            body = key[len(prefix) :]
            if 8 <= len(body) <= 200 and body.isascii() and body.isalnum():
                return KeyShape(livemode=livemode)
    return None


def hash_key(key: str) -> bytes:
    """Keys are high-entropy random strings, so a plain SHA-256 is a sound at-rest digest."""
    return hashlib.sha256(key.encode("ascii", "replace")).digest()


def display_hint(key: str) -> str:
    """``sk_test_****abcd``: enough to recognise a key in logs and error messages."""
    prefix = LIVE_PREFIX if key.startswith(LIVE_PREFIX) else TEST_PREFIX
    return f"{prefix}{'*' * 20}{key[-4:]}"
