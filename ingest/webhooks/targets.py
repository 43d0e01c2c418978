"""Whether a webhook endpoint may be registered at a URL: Stripe's https rule for live mode, and
only public targets unless the operator allows private ones (``meterflow.webhooks``).

A name that does not resolve now is accepted: it reaches nothing yet, and the aggregator checks
every address again on each delivery.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from ingest.edge.errors import InvalidRequest
from meterflow.webhooks.addresses import ALLOW_PRIVATE_SETTING, TargetRefused, literal_address
from meterflow.webhooks.targets import TargetPolicy, TargetUnresolvable

RESOLVE_TIMEOUT_S = 2.0


def _invalid(url: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid URL: {url[:100]}. {reason}", code="url_invalid", param="url")


def check_host_syntax(url: str) -> None:
    """Refuse a malformed host, or an IP address in a disguise (``0x7f000001``, ``2130706433``),
    whatever the settings: pure, for the parameter parser."""
    host = urlsplit(url).hostname or ""
    try:
        literal_address(host)
    except TargetRefused as exc:
        raise _invalid(url, f"The host {exc}.") from exc


async def check_endpoint_url(url: str, *, livemode: bool, targets: TargetPolicy) -> None:
    """Raise ``url_invalid`` if an endpoint of this mode may not point at ``url`` (already
    parsed by ``parse_url``)."""
    parts = urlsplit(url)
    if livemode and parts.scheme != "https":
        raise _invalid(url, "Live mode webhook endpoints must use an https URL.")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await targets.addresses(host, port)
    except TargetRefused as exc:
        hint = f" ({ALLOW_PRIVATE_SETTING} allows local targets)" if exc.local else ""
        raise _invalid(url, f"Webhook endpoints must be publicly reachable: {exc}{hint}.") from exc
    except (TargetUnresolvable, TimeoutError):
        pass  # checked again on every delivery
