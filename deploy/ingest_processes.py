"""The ingest processes ``meterflow up`` runs: one, or ``METERFLOW_INGEST_PROCESSES`` on one port.

With one, ingest runs as it always has: ``/readyz`` and ``/metrics`` on the API port. With more,
each is started with ``METERFLOW_HTTP_REUSE_PORT`` (the kernel spreads new connections over them)
and a port of its own for ``/readyz`` and ``/metrics`` (``METERFLOW_INGEST_METRICS_PORT``, counting
up from the configured one, or from 8090). On the shared port a probe or a scrape reaches
whichever process the kernel picked, so neither the launcher waiting for a restarted child nor
Prometheus could tell the processes apart there.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterflow.settings import Settings

DEFAULT_FIRST_METRICS_PORT = 8090


@dataclass(frozen=True, slots=True)
class IngestProcessPlan:
    """One ingest child: its name in ``up``'s output, the environment it gets on top of the
    stack's, and where it says it is ready and shows its metrics."""

    name: str
    env: dict[str, str]
    ready_url: str
    metrics_url: str


def ingest_process_plans(settings: Settings) -> list[IngestProcessPlan]:
    """The ingest children for ``settings.launcher.ingest_processes``."""
    host = settings.http_host
    count = settings.launcher.ingest_processes
    if count == 1:
        api = f"http://{host}:{settings.ingest.http_port}"
        return [IngestProcessPlan("ingest", {}, f"{api}/readyz", f"{api}/metrics")]
    first = settings.ingest.ingest_metrics_port or DEFAULT_FIRST_METRICS_PORT
    plans = []
    for index in range(count):
        port = first + index
        own = f"http://{host}:{port}"
        env = {"METERFLOW_HTTP_REUSE_PORT": "1", "METERFLOW_INGEST_METRICS_PORT": str(port)}
        plans.append(
            IngestProcessPlan(f"ingest {index + 1}", env, f"{own}/readyz", f"{own}/metrics")
        )
    return plans
