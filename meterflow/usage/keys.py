"""Whose usage: the key folded usage is kept and read under."""

from __future__ import annotations

UsageKey = tuple[str, bool, str, str]  # (account, livemode, meter, customer)
