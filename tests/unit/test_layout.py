"""The layout's rule: imports point one way. Processes (ingest, aggregator) import the core; the
core imports no process; the launchers import the core; the command line imports anything and
nothing imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("meterflow", "ingest", "aggregator", "deploy", "sql", "loadtest")

# package -> the first-party packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "meterflow": set(),
    "sql": set(),
    "ingest": {"meterflow"},
    "aggregator": {"meterflow"},
    "deploy": {"meterflow"},
    "loadtest": {"meterflow", "deploy"},
}
CLI = "deploy.cli"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(path.relative_to(ROOT).with_suffix("").parts), path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_point_one_way(module: str, path: Path) -> None:
    if module == CLI:
        return
    package = module.split(".", maxsplit=1)[0]
    wrong = sorted(
        name
        for name in _imports(path)
        if name == CLI
        or (name.split(".")[0] != package and name.split(".")[0] not in ALLOWED[package])
    )
    assert not wrong, f"{module} imports {wrong}"


def test_nothing_imports_the_command_line() -> None:
    users = [module for module, path in _modules() if CLI in _imports(path)]
    tests = [p for p in (ROOT / "tests").rglob("*.py") if CLI in _imports(p)]
    assert users == []
    assert tests == []
