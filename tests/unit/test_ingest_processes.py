"""Which ingest children ``meterflow up`` starts: one as before, or several sharing the API port,
each with a metrics and readiness port of its own (pure)."""

from deploy.ingest_processes import IngestProcessPlan, ingest_process_plans
from meterflow.settings import Settings


def test_one_process_keeps_the_api_port_for_readiness_and_metrics() -> None:
    settings = Settings().with_overrides(http_port=9000)
    assert ingest_process_plans(settings) == [
        IngestProcessPlan(
            "ingest", {}, "http://127.0.0.1:9000/readyz", "http://127.0.0.1:9000/metrics"
        )
    ]


def test_several_share_the_port_and_each_gets_the_next_metrics_port() -> None:
    plans = ingest_process_plans(Settings().with_overrides(ingest_processes=3))
    assert [plan.name for plan in plans] == ["ingest 1", "ingest 2", "ingest 3"]
    assert [plan.env for plan in plans] == [
        {"METERFLOW_HTTP_REUSE_PORT": "1", "METERFLOW_INGEST_METRICS_PORT": str(port)}
        for port in (8090, 8091, 8092)
    ]
    assert plans[1].ready_url == "http://127.0.0.1:8091/readyz"
    assert plans[2].metrics_url == "http://127.0.0.1:8092/metrics"


def test_the_first_metrics_port_can_be_chosen() -> None:
    settings = Settings().with_overrides(ingest_processes=2, ingest_metrics_port=9300)
    ports = [plan.env["METERFLOW_INGEST_METRICS_PORT"] for plan in ingest_process_plans(settings)]
    assert ports == ["9300", "9301"]
