"""Webhook endpoints accept every event type meterflow emits: each type an ``announce`` call names
anywhere in the code, the meter events, alerts and error reports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from aggregator.error_reports.reports import REPORT_EVENT_TYPES
from ingest.edge.params import Params
from ingest.webhooks.api import EVENT_TYPES, parse_enabled_events
from meterflow.alerts import TRIGGERED_TYPE
from meterflow.billing.announce import BILLING_EVENT_TYPES
from meterflow.meters import METER_EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]


def _announced_types() -> set[str]:
    """The event type of every ``announce(conn, who, TYPE, …)`` call in the processes and the
    core: a string literal, or a module constant resolved by importing the module."""
    found: set[str] = set()
    for package in ("meterflow", "ingest", "aggregator"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "announce"
                    and len(node.args) >= 3
                ):
                    continue
                arg = node.args[2]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
                elif isinstance(arg, ast.Name):
                    value = getattr(importlib.import_module(module), arg.id, None)
                    if isinstance(value, str):
                        found.add(value)
                    else:  # a variable: the meter store's transitions pick one of two constants
                        found.add(f"<{module}:{arg.id}>")
                else:
                    found.add(f"<{module}:{ast.unparse(arg)}>")
    return found


def test_every_announced_type_can_be_subscribed_to() -> None:
    announced = _announced_types()
    unresolved = {t for t in announced if t.startswith("<")}
    assert unresolved <= {"<ingest.meters.store:event_type>"}, unresolved
    assert {"billing.meter.created", "billing.meter.updated", "customer.created"} <= announced
    assert announced - unresolved <= EVENT_TYPES


def test_meter_alert_and_error_report_events_can_be_subscribed_to() -> None:
    assert {
        "billing.meter.created",
        "billing.meter.updated",
        "billing.meter.deactivated",
        "billing.meter.reactivated",
    } == METER_EVENT_TYPES
    emitted = METER_EVENT_TYPES | BILLING_EVENT_TYPES | {TRIGGERED_TYPE} | set(REPORT_EVENT_TYPES)
    assert emitted <= EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(METER_EVENT_TYPES))
def test_an_endpoint_may_listen_to_meter_events(event_type: str) -> None:
    assert parse_enabled_events(Params({"enabled_events": [event_type]}), required=True) == [
        event_type
    ]
