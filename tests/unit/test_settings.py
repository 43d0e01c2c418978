from pathlib import Path

import pytest

from meterflow.errors import ConfigurationError
from meterflow.settings import Settings, environment_variables, load_settings, mask_url_password
from meterflow.settings.roles import flat_names


def test_environment_overrides_defaults() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u:pw@h/db",
            "METERFLOW_HTTP_PORT": "9000",
            "METERFLOW_DATA_DIR": "/srv/mf",
            "KAFKA_BOOTSTRAP_SERVERS": "",
        }
    )
    assert settings.ingest.http_port == 9000
    assert settings.launcher.data_dir == Path("/srv/mf")
    assert settings.kafka_bootstrap_servers is None
    assert settings.masked()["database_url"] == "postgresql://u:***@h/db"


def test_bad_values_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="METERFLOW_HTTP_PORT"):
        load_settings({"METERFLOW_HTTP_PORT": "eighty"})
    with pytest.raises(ConfigurationError):
        load_settings({"METERFLOW_DB_POOL_MIN": "5", "METERFLOW_DB_POOL_MAX": "2"})


def test_mask_leaves_passwordless_urls_alone() -> None:
    assert mask_url_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url_password("not a url") == "not a url"


def test_retention_settings_have_defaults_and_come_from_the_environment() -> None:
    defaults = load_settings({})
    assert (
        defaults.aggregator.event_retention_days,
        defaults.aggregator.maintenance_interval_s,
    ) == (37, 300.0)
    settings = load_settings(
        {"METERFLOW_EVENT_RETENTION_DAYS": "40", "METERFLOW_MAINTENANCE_INTERVAL_S": "0.5"}
    )
    assert (
        settings.aggregator.event_retention_days,
        settings.aggregator.maintenance_interval_s,
    ) == (40, 0.5)


def test_retention_must_outlast_the_back_dating_window() -> None:
    assert (
        load_settings({"METERFLOW_EVENT_RETENTION_DAYS": "36"}).aggregator.event_retention_days
        == 36
    )
    with pytest.raises(ConfigurationError, match="35 days"):
        load_settings({"METERFLOW_EVENT_RETENTION_DAYS": "35"})
    with pytest.raises(ConfigurationError, match="MAINTENANCE_INTERVAL"):
        load_settings({"METERFLOW_MAINTENANCE_INTERVAL_S": "0"})


def test_alert_evaluator_settings_have_defaults_and_come_from_the_environment() -> None:
    defaults = load_settings({})
    assert (defaults.alerts.alerts_consumer_group, defaults.alerts.alerts_metrics_port) == (
        "meterflow-alerts",
        8082,
    )
    settings = load_settings(
        {"METERFLOW_ALERTS_CONSUMER_GROUP": "alerts-2", "METERFLOW_ALERTS_METRICS_PORT": "9182"}
    )
    assert (settings.alerts.alerts_consumer_group, settings.alerts.alerts_metrics_port) == (
        "alerts-2",
        9182,
    )


def test_consumer_niceness_defaults_to_ten_and_stays_within_what_nice_allows() -> None:
    assert load_settings({}).consumers.consumer_nice == 10
    assert load_settings({"METERFLOW_CONSUMER_NICE": "0"}).consumers.consumer_nice == 0
    for bad in ("-1", "20"):
        with pytest.raises(ConfigurationError, match="CONSUMER_NICE"):
            load_settings({"METERFLOW_CONSUMER_NICE": bad})


def test_overrides_are_named_flat_and_land_in_their_section() -> None:
    settings = Settings().with_overrides(fold_batch_max=7, http_host="127.0.0.2", http_port=1)
    assert settings.aggregator.fold_batch_max == 7
    assert settings.ingest.http_port == 1
    assert settings.http_host == "127.0.0.2"
    assert settings.webhooks == Settings().webhooks
    with pytest.raises(TypeError, match="no setting named"):
        Settings().with_overrides(fold_batch=7)


def test_every_setting_has_exactly_one_environment_variable() -> None:
    variables = environment_variables()
    assert sorted(variables.values()) == sorted(flat_names())
    assert set(Settings().masked()) == set(flat_names())


def test_http_edge_limits_come_from_the_environment_and_must_be_positive() -> None:
    settings = load_settings(
        {
            "METERFLOW_MAX_REQUEST_LINE_BYTES": "4096",
            "METERFLOW_MAX_HEADER_BYTES": "8192",
            "METERFLOW_MAX_HEADER_COUNT": "50",
            "METERFLOW_HEADER_TIMEOUT_S": "2.5",
            "METERFLOW_BODY_TIMEOUT_S": "7.5",
            "METERFLOW_KEEP_ALIVE_TIMEOUT_S": "5",
            "METERFLOW_MAX_CONNECTIONS": "64",
        }
    )
    ingest = settings.ingest
    assert (ingest.max_request_line_bytes, ingest.max_header_bytes, ingest.max_header_count) == (
        4096,
        8192,
        50,
    )
    assert (ingest.header_timeout_s, ingest.body_timeout_s, ingest.keep_alive_timeout_s) == (
        2.5,
        7.5,
        5,
    )
    assert ingest.max_connections == 64
    for name in ("METERFLOW_HEADER_TIMEOUT_S", "METERFLOW_MAX_CONNECTIONS"):
        with pytest.raises(ConfigurationError, match=name):
            load_settings({name: "0"})
    with pytest.raises(ConfigurationError, match="METERFLOW_KEEP_ALIVE_TIMEOUT_S"):
        load_settings({"METERFLOW_KEEP_ALIVE_TIMEOUT_S": "0.5"})


def test_ingest_processes_and_their_own_metrics_port_come_from_the_environment() -> None:
    assert (Settings().launcher.ingest_processes, Settings().ingest.ingest_metrics_port) == (1, 0)
    settings = load_settings(
        {
            "METERFLOW_INGEST_PROCESSES": "3",
            "METERFLOW_INGEST_METRICS_PORT": "9100",
            "METERFLOW_HTTP_REUSE_PORT": "yes",
        }
    )
    assert settings.launcher.ingest_processes == 3
    assert settings.ingest.ingest_metrics_port == 9100
    assert settings.ingest.reuse_port is True
    with pytest.raises(ConfigurationError, match="METERFLOW_INGEST_PROCESSES"):
        load_settings({"METERFLOW_INGEST_PROCESSES": "0"})
    with pytest.raises(ConfigurationError, match="METERFLOW_INGEST_METRICS_PORT"):
        load_settings({"METERFLOW_INGEST_METRICS_PORT": "70000"})


def test_local_postgres_settings_are_name_value_pairs() -> None:
    settings = load_settings(
        {"METERFLOW_LOCAL_POSTGRES_SETTINGS": "shared_buffers=2GB, max_wal_size = 16GB"}
    )
    assert settings.launcher.local_postgres_settings == (
        ("shared_buffers", "2GB"),
        ("max_wal_size", "16GB"),
    )
    assert Settings().launcher.local_postgres_settings == ()
    for bad in ("shared_buffers", "shared_buffers=", "=2GB", "Shared-Buffers=2GB", "a=1,,b=2"):
        with pytest.raises(ConfigurationError, match="METERFLOW_LOCAL_POSTGRES_SETTINGS"):
            load_settings({"METERFLOW_LOCAL_POSTGRES_SETTINGS": bad})
