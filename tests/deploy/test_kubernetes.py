"""The Kustomize base of ``deploy/kubernetes`` checked offline: every object against the
Kubernetes API schemas that ``kubernetes-validate`` ships, and the wiring between objects
(selectors, probes, ports, settings) that no schema sees."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from meterflow.settings import Settings, environment_variables
from tests.fixtures.deploy_files import (
    KUSTOMIZE_BASE,
    Manifest,
    load_documents,
    render_kustomize_base,
    tool,
)

# The oldest Kubernetes minor still commonly run, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
ROLE_PORTS = {
    "ingest": Settings().ingest.http_port,
    "aggregator": Settings().aggregator.aggregator_metrics_port,
    "alerts": Settings().alerts.alerts_metrics_port,
}

MANIFESTS = render_kustomize_base()


def _of_kind(kind: str) -> list[Manifest]:
    return [m for m in MANIFESTS if m["kind"] == kind]


def _name(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_python_rendering_matches_kubectl_kustomize() -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the base is rendered by reading its resources")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_BASE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    by_name = {_name(m): m for m in load_documents(built.stdout)}
    assert by_name == {_name(m): m for m in MANIFESTS}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=_name)
def test_every_object_is_valid_for_kubernetes(manifest: Manifest, version: str) -> None:
    if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
        pytest.skip("a Prometheus Operator CRD: no schema ships with kubernetes-validate")
    # Strict: a field the API does not know is an error, not silently dropped.
    kubernetes_validate.validate(manifest, version, strict=True)


def test_the_base_has_every_piece() -> None:
    names = {_name(m) for m in MANIFESTS}
    for role in ROLE_PORTS:
        assert {
            f"Deployment/meterflow-{role}",
            f"Service/meterflow-{role}",
            f"PodDisruptionBudget/meterflow-{role}",
        } <= names
    assert {"Job/meterflow-migrate", "ServiceMonitor/meterflow", "ConfigMap/meterflow"} <= names


@pytest.mark.parametrize("deployment", _of_kind("Deployment"), ids=_name)
def test_deployments_probe_health_on_their_role_port(deployment: Manifest) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (role,) = container["args"]
    assert deployment["metadata"]["name"] == f"meterflow-{role}"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert list(ports.values()) == [ROLE_PORTS[role]]
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert readiness["port"] in ports
    assert liveness["port"] in ports
    assert deployment["spec"]["replicas"] >= 2


@pytest.mark.parametrize("deployment", _of_kind("Deployment"), ids=_name)
def test_each_deployment_has_a_disruption_budget_and_a_service(deployment: Manifest) -> None:
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    budgets = [
        pdb
        for pdb in _of_kind("PodDisruptionBudget")
        if _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    ]
    services = [s for s in _of_kind("Service") if _selects(s["spec"]["selector"], pod_labels)]
    assert len(budgets) == 1
    assert len(services) == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in services[0]["spec"]["ports"]} <= port_names


def test_pods_run_unprivileged_with_resources() -> None:
    for workload in (*_of_kind("Deployment"), *_of_kind("Job")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in _containers(pod):
            assert container["image"].startswith("meterflow:")
            assert {"requests", "limits"} <= set(container["resources"])
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_job_migrates_then_creates_topics() -> None:
    (job,) = _of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in _containers(pod)] == [["migrate"], ["topics"]]


def test_configuration_names_only_settings_meterflow_reads() -> None:
    known = set(environment_variables())
    (config,) = _of_kind("ConfigMap")
    assert set(config["data"]) <= known
    for workload in (*_of_kind("Deployment"), *_of_kind("Job")):
        for container in _containers(workload["spec"]["template"]["spec"]):
            assert {env["name"] for env in container.get("env", [])} <= known
            assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["meterflow"]


def test_the_service_monitor_scrapes_every_service() -> None:
    (monitor,) = _of_kind("ServiceMonitor")
    spec = monitor["spec"]
    selected = [
        s
        for s in _of_kind("Service")
        if _selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in selected} == {f"meterflow-{r}" for r in ROLE_PORTS}
    endpoint_ports = {endpoint["port"] for endpoint in spec["endpoints"]}
    assert {endpoint["path"] for endpoint in spec["endpoints"]} == {"/metrics"}
    for service in selected:
        # Each service is scraped on one named port; its `job` label is its component.
        assert len({p["name"] for p in service["spec"]["ports"]} & endpoint_ports) == 1
        assert service["metadata"]["labels"][spec["jobLabel"]] in ROLE_PORTS
