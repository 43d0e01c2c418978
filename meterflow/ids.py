"""Object identifiers shaped like Stripe's (``mtr_test_…``, ``acct_…``, ``req_…``)."""

from __future__ import annotations

from meterflow.apikeys import random_token


def object_id(prefix: str, *, livemode: bool | None = None, length: int = 24) -> str:
    """``object_id("mtr", livemode=False)`` -> ``mtr_test_<24 random characters>``."""
    mode = "test_" if livemode is False else ""
    return f"{prefix}_{mode}{random_token(length)}"
