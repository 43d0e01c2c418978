"""The dashboards as committed are what ``deploy/grafana/dashboards.py`` writes; every panel asks
the dashboard's Prometheus; every metric a panel or a rule names is one meterflow exports (the
real-Prometheus test checks the same against scraped series, labels included)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from deploy.grafana.dashboards import GENERATED, main, stale
from tests.fixtures.promql import (
    ROOT,
    dashboard_expressions,
    recorded_names,
    rule_expressions,
    selectors,
)

# Panels each dashboard must have: what an operator of a metering pipeline looks for first.
REQUIRED = {
    "overview.json": {
        "Meter events by endpoint and outcome",
        "HTTP 4xx and 5xx",
        "Request latency",
        "Kafka acknowledgement latency",
        "Rate-limited requests (429)",
    },
    "pipeline.json": {
        "Consumer lag (records)",
        "Consumer lag (seconds)",
        "Fold rate",
        "Batch sizes",
        "Fold failures",
        "Freshness (accepted → visible in summaries)",
        "Rejected events by code",
    },
    "alerts-and-webhooks.json": {
        "Alert evaluations",
        "Alert firings",
        "Evaluation latency (p99)",
        "Webhook deliveries by outcome",
        "Webhook backlog",
        "Oldest undelivered webhook",
    },
    "billing.json": {"Subscription periods", "Invoices", "Credit balance alerts"},
}


def _boards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GENERATED.glob("*.json"))}


def test_the_committed_json_is_what_the_generator_writes() -> None:
    assert stale() == [], "the dashboards' JSON is stale: run python -m deploy.grafana.dashboards"


def test_a_changed_missing_or_left_over_file_is_stale(tmp_path: Path) -> None:
    for path in GENERATED.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    assert stale(tmp_path) == []
    edited = tmp_path / "pipeline.json"
    edited.write_text(edited.read_text().replace("meterflow_fold", "meterflow_folds"))
    (tmp_path / "billing.json").unlink()
    (tmp_path / "old.json").write_text("{}")
    assert stale(tmp_path) == ["billing.json", "old.json", "pipeline.json"]


def test_check_exits_zero_on_the_committed_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_each_dashboard_has_its_panels_and_each_panel_asks_the_chosen_prometheus() -> None:
    boards = _boards()
    assert set(boards) == set(REQUIRED)
    for name, board in boards.items():
        assert board["uid"].startswith("meterflow-")
        variables = board["templating"]["list"]
        assert [(v["name"], v["type"], v["query"]) for v in variables] == [
            ("datasource", "datasource", "prometheus")
        ]
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert REQUIRED[name] <= {p["title"] for p in panels}, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in panels:
            assert panel["description"], panel["title"]
            assert panel["targets"], panel["title"]
            for target in [panel, *panel["targets"]]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def _exported_names() -> str:
    return "\n".join(
        path.read_text()
        for package in ("ingest", "aggregator", "meterflow")
        for path in (ROOT / package).rglob("*.py")
    )


def test_every_metric_a_panel_or_rule_names_is_exported_or_recorded() -> None:
    source = _exported_names()
    recorded = recorded_names()
    unknown = []
    for expression in dashboard_expressions() + rule_expressions():
        for selector in selectors(expression.expr):
            family = re.sub(r"_(bucket|sum|count)$", "", selector.metric)
            if selector.metric in recorded:
                continue
            if f'"{selector.metric}"' not in source and f'"{family}"' not in source:
                unknown.append(f"{expression.where}: {selector.metric}")
    assert unknown == []
