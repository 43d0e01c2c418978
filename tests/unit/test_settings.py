from pathlib import Path

import pytest

from meterflow.errors import ConfigurationError
from meterflow.settings import load_settings, mask_url_password


def test_environment_overrides_defaults() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u:pw@h/db",
            "METERFLOW_HTTP_PORT": "9000",
            "METERFLOW_DATA_DIR": "/srv/mf",
            "KAFKA_BOOTSTRAP_SERVERS": "",
        }
    )
    assert settings.http_port == 9000
    assert settings.data_dir == Path("/srv/mf")
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
    assert (defaults.event_retention_days, defaults.maintenance_interval_s) == (37, 300.0)
    settings = load_settings(
        {"METERFLOW_EVENT_RETENTION_DAYS": "40", "METERFLOW_MAINTENANCE_INTERVAL_S": "0.5"}
    )
    assert (settings.event_retention_days, settings.maintenance_interval_s) == (40, 0.5)


def test_retention_must_outlast_the_back_dating_window() -> None:
    assert load_settings({"METERFLOW_EVENT_RETENTION_DAYS": "36"}).event_retention_days == 36
    with pytest.raises(ConfigurationError, match="35 days"):
        load_settings({"METERFLOW_EVENT_RETENTION_DAYS": "35"})
    with pytest.raises(ConfigurationError, match="MAINTENANCE_INTERVAL"):
        load_settings({"METERFLOW_MAINTENANCE_INTERVAL_S": "0"})


def test_alert_evaluator_settings_have_defaults_and_come_from_the_environment() -> None:
    defaults = load_settings({})
    assert (defaults.alerts_consumer_group, defaults.alerts_metrics_port) == (
        "meterflow-alerts",
        8082,
    )
    settings = load_settings(
        {"METERFLOW_ALERTS_CONSUMER_GROUP": "alerts-2", "METERFLOW_ALERTS_METRICS_PORT": "9182"}
    )
    assert (settings.alerts_consumer_group, settings.alerts_metrics_port) == ("alerts-2", 9182)


def test_consumer_niceness_defaults_to_ten_and_stays_within_what_nice_allows() -> None:
    assert load_settings({}).consumer_nice == 10
    assert load_settings({"METERFLOW_CONSUMER_NICE": "0"}).consumer_nice == 0
    for bad in ("-1", "20"):
        with pytest.raises(ConfigurationError, match="CONSUMER_NICE"):
            load_settings({"METERFLOW_CONSUMER_NICE": bad})
