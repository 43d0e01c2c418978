"""``deploy/compose.yaml`` checked offline: against the Compose specification's JSON schema (the
copy check-jsonschema ships, Apache-2.0, from github.com/compose-spec/compose-spec), then the
wiring no schema sees: mounted files exist, roles and ports agree with meterflow's settings,
the one-shot jobs gate the services, and Prometheus' configuration passes promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from meterflow.settings import Settings, environment_variables
from tests.fixtures.deploy_files import DEPLOY, ROOT, load_yaml, tool

COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, Any] = COMPOSE["services"]
ROLE_PORTS = {
    "ingest": Settings().ingest.http_port,
    "aggregator": Settings().aggregator.aggregator_metrics_port,
    "alerts": Settings().alerts.alerts_metrics_port,
}
ONE_SHOT = ("migrate", "topics")
# Services running the meterflow image, by the role they run.
MEMBERS = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("meterflow:")}


def _compose_schema() -> Any:
    vendored = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    return json.loads(vendored.read_text())


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = _compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = {**COMPOSE, "services": {**SERVICES, "ingest": {**SERVICES["ingest"], "comand": []}}}
    assert not jsonschema.Draft202012Validator(_compose_schema()).is_valid(broken)


def test_every_mounted_file_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts {source}"


def test_the_image_is_built_from_the_repository_dockerfile() -> None:
    for service in MEMBERS.values():
        build = service["build"]
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "Dockerfile"
        )


def test_ingest_and_the_aggregator_run_two_replicas() -> None:
    assert SERVICES["ingest"]["deploy"]["replicas"] == 2
    assert SERVICES["aggregator"]["deploy"]["replicas"] == 2
    assert {name: s["command"] for name, s in MEMBERS.items()} == {
        "migrate": ["migrate"],
        "topics": ["topics"],
        "ingest": ["ingest"],
        "aggregator": ["aggregator"],
        "alerts": ["alerts"],
    }


@pytest.mark.parametrize("role", ROLE_PORTS)
def test_services_wait_for_migrations_and_topics(role: str) -> None:
    depends = SERVICES[role]["depends_on"]
    for job in ONE_SHOT:
        assert depends[job]["condition"] == "service_completed_successfully"
        assert SERVICES[job]["restart"] == "no"
    assert depends["postgres"]["condition"] == depends["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("role", ROLE_PORTS)
def test_health_checks_ask_readyz_on_the_role_port(role: str) -> None:
    service = SERVICES[role]
    check = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{ROLE_PORTS[role]}/readyz" in check
    assert service["expose"] == [str(ROLE_PORTS[role])]


# Read by uvicorn itself: the proxies whose X-Forwarded-For ingest believes.
SERVER_VARIABLES = {"FORWARDED_ALLOW_IPS"}


def test_meterflow_services_set_only_known_variables() -> None:
    for service in MEMBERS.values():
        assert set(service["environment"]) <= set(environment_variables()) | SERVER_VARIABLES
        # Inside a container the processes must listen beyond loopback.
        assert service["environment"]["METERFLOW_HTTP_HOST"] == "0.0.0.0"  # noqa: S104


@pytest.mark.parametrize("command", sorted({s["command"][0] for s in MEMBERS.values()}))
def test_every_command_is_a_meterflow_command(command: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "deploy.cli", command, "--help"],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_load_balancer_checks_readiness_of_every_ingest_replica() -> None:
    config = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in config


def test_ingest_believes_the_forwarded_address_from_the_load_balancer_only() -> None:
    config = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert "option forwardfor" in config
    balancer = COMPOSE["services"]["ingest-lb"]["networks"]["default"]["ipv4_address"]
    assert COMPOSE["services"]["ingest"]["environment"]["FORWARDED_ALLOW_IPS"] == balancer
    assert f"server-template ingest 4 ingest:{ROLE_PORTS['ingest']}" in config
    assert SERVICES["ingest-lb"]["ports"] == [f"127.0.0.1:8080:{ROLE_PORTS['ingest']}"]


def test_prometheus_scrapes_every_role_on_its_port() -> None:
    config = load_yaml(DEPLOY / "compose" / "prometheus.yml")
    ports = {
        job["job_name"]: [(sd["names"], sd["port"]) for sd in job["dns_sd_configs"]]
        for job in config["scrape_configs"]
    }
    assert ports == {role: [([role], port)] for role, port in ROLE_PORTS.items()}


def test_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package provides it)")
    # Laid out as the compose file mounts them: the rules beside the configuration.
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_is_provisioned_with_the_dashboards() -> None:
    grafana = SERVICES["grafana"]
    mounts = {
        target: source
        for source, target, *_ in (volume.split(":") for volume in grafana["volumes"])
    }
    provider = load_yaml(DEPLOY / "compose" / "grafana" / "dashboards.yml")["providers"][0]
    dashboards = COMPOSE_FILE.parent / mounts[provider["options"]["path"]]
    files = sorted(dashboards.glob("*.json"))
    assert files, f"no dashboards in {dashboards}"
    datasource = load_yaml(DEPLOY / "compose" / "grafana" / "datasources.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    for path in files:
        # Every panel finds the provisioned Prometheus: by its uid, or through the dashboard's
        # data source variable, whose default is the default data source.
        assert _datasources(json.loads(path.read_text())) <= {
            ("prometheus", datasource["uid"]),
            ("prometheus", "${datasource}"),
        }, path.name


def _datasources(node: object) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        reference = node.get("datasource")
        if isinstance(reference, dict):
            found.add((reference.get("type", ""), reference.get("uid", "")))
        for value in node.values():
            found |= _datasources(value)
    elif isinstance(node, list):
        for value in node:
            found |= _datasources(value)
    return found
