"""What a credit grant's state allows, checked once the grant (or the scope's prices) is loaded
(pure), and the errors the credit APIs answer."""

from __future__ import annotations

from collections.abc import Mapping

from ingest.billing.credits.params import GrantChanges, NewGrant
from ingest.edge.errors import InvalidRequest, ResourceMissing
from meterflow.billing.objects.credit_grants import CreditGrant
from meterflow.billing.objects.prices import Price

# Stripe's limit, counted by ledger balance: a grant is unused while it is neither voided nor
# expired and has a balance left (a pending grant's credit counts before it takes effect).
MAX_UNUSED_GRANTS = 100


def missing_grant(grant_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such credit grant: '{grant_id}'", param=param)


def missing_transaction(transaction_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such credit balance transaction: '{transaction_id}'", param=param)


def unused_grants_limit(customer: str) -> InvalidRequest:
    return InvalidRequest(
        f"The customer {customer} already has {MAX_UNUSED_GRANTS} unused credit grants, the most "
        "allowed. Void or expire one, or use its credits, before granting more.",
        param="customer",
    )


def effective_times(new: NewGrant, now_s: int) -> tuple[int, int | None]:
    """The new grant's ``effective_at`` (now unless given) and ``expires_at``, which must come
    after both now and ``effective_at``."""
    effective_at = now_s if new.effective_at is None else new.effective_at
    if new.expires_at is not None and new.expires_at <= max(now_s, effective_at):
        raise InvalidRequest(
            "Invalid expires_at: it must be in the future and later than effective_at.",
            code="parameter_invalid",
            param="expires_at",
        )
    return effective_at, new.expires_at


def check_scope_prices(new: NewGrant, prices: Mapping[str, Price]) -> None:
    """Each price of the scope is one of the caller's, metered, and in the grant's currency."""
    for index, price_id in enumerate(new.scope_prices or ()):
        param = f"{new.scope_param}[{index}][id]"
        price = prices.get(price_id)
        if price is None:
            raise ResourceMissing(f"No such price: '{price_id}'", param=param)
        if not price.metered:
            kind = "one_time" if price.recurring is None else "licensed"
            raise InvalidRequest(
                f"The price {price_id} is {kind}; credit grants apply only to metered prices.",
                code="parameter_invalid",
                param=param,
            )
        if price.currency != new.currency:
            raise InvalidRequest(
                f"The price {price_id} is in {price.currency}, but the credit grant is in "
                f"{new.currency}.",
                code="parameter_invalid",
                param=param,
            )


def check_expiry_change(grant: CreditGrant, changes: GrantChanges, now_s: int) -> None:
    """A new ``expires_at`` must come after now and after ``effective_at``; an expired grant's
    expiry is past changing."""
    if changes.expires_at is None and not changes.clear_expiry:
        return
    if grant.expired(now_s):
        raise InvalidRequest(
            f"The credit grant {grant.id} has expired; its expires_at cannot change.",
            param="expires_at",
        )
    if changes.expires_at is not None and changes.expires_at <= max(now_s, grant.effective_at):
        raise InvalidRequest(
            "Invalid expires_at: it must be in the future and later than effective_at.",
            code="parameter_invalid",
            param="expires_at",
        )


def check_expire(grant: CreditGrant, now_s: int) -> None:
    if grant.expired(now_s):
        raise InvalidRequest(f"The credit grant {grant.id} has already expired.")
    if grant.effective_at > now_s:
        raise InvalidRequest(
            f"The credit grant {grant.id} is not in effect yet (effective_at "
            f"{grant.effective_at}), so it cannot expire; void it instead."
        )


def check_void(grant: CreditGrant, *, applied: bool) -> None:
    if grant.voided_at is not None:
        raise InvalidRequest(f"The credit grant {grant.id} has already been voided.")
    if applied:
        raise InvalidRequest(
            f"The credit grant {grant.id} cannot be voided: its credits have been applied to an "
            "invoice."
        )
