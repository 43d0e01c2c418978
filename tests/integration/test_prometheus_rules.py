"""``deploy/prometheus/rules.yml`` passes ``promtool check rules``, and every alert fires (and stays
quiet) as its ``promtool test rules`` unit test in ``deploy/prometheus/tests/`` says; every
alert has such a test that makes it fire, a row in the README's table and a runbook paragraph.

Needs Debian's ``prometheus`` package, which brings promtool (``.ci/run`` installs it); without it
the tests are skipped. No Kafka or PostgreSQL needed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.fixtures.promql import ROOT, RULE_TESTS, RULES, rule_expressions

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's prometheus package (apt-get install prometheus; "
    ".ci/run does) to test the alert rules",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_the_rules_are_valid() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_every_alert_behaves_as_its_unit_test_says() -> None:
    files = sorted(str(p) for p in RULE_TESTS.glob("*.yml"))
    tested = _promtool("test", "rules", *files)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(files)


def _alerts() -> set[str]:
    return {e.where.split(": ", 1)[1] for e in rule_expressions() if e.kind == "alert"}


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    alerts = _alerts()
    firing: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            firing |= {
                check["alertname"]
                for check in case.get("alert_rule_test", [])
                if check["exp_alerts"]
            }
    assert alerts - firing == set()


def test_every_alert_has_a_row_and_a_runbook_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for alert in _alerts():
        assert f"| `{alert}` |" in readme, f"{alert} is missing from the README's table of alerts"
        assert f"- **{alert}.**" in readme, f"{alert} has no runbook paragraph in the README"
