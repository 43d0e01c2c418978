"""Who owns a billing object: one account, in one mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Owner(Protocol):
    """An account and mode; every billing object is read and written within one."""

    @property
    def account_id(self) -> str: ...

    @property
    def livemode(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class AccountMode:
    """An :class:`Owner` named by its row, for processes that work across accounts."""

    account_id: str
    livemode: bool
