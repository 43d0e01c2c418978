"""The only module that reads the environment: variable names, parsers and the checks that span
several settings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from meterflow.errors import ConfigurationError
from meterflow.rules.events import MAX_PAST_S
from meterflow.settings.roles import (
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    LOG_FORMATS,
    KafkaSaslMechanism,
    KafkaSecurityProtocol,
    LogFormat,
    Settings,
)
from meterflow.windows import DAY_S, HOUR_S

MAX_INVOICE_GRACE_S = 72 * HOUR_S
_MAX_PORT = 65_535
_FLAGS = {"1": True, "true": True, "yes": True, "on": True}
_FLAGS |= {"0": False, "false": False, "no": False, "off": False}
_SETTING_NAME = re.compile(r"[a-z][a-z0-9_.]*")


def flag(raw: str) -> bool:
    """``1``, ``true``, ``yes``, ``on`` or ``0``, ``false``, ``no``, ``off``, in any case."""
    try:
        return _FLAGS[raw.lower()]
    except KeyError:
        raise ValueError(raw) from None


def log_format(raw: str) -> LogFormat:
    """``text`` (one line for people) or ``json`` (one object per line), in any case."""
    lowered = raw.lower()
    if lowered not in LOG_FORMATS:
        raise ValueError(raw)
    return lowered


def postgres_settings(raw: str) -> tuple[tuple[str, str], ...]:
    """``name=value`` pairs separated by commas (``shared_buffers=2GB,max_wal_size=16GB``): server
    settings for the local PostgreSQL, passed to it as they are."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _SETTING_NAME.fullmatch(name) or not value:
            raise ValueError(item)
        pairs.append((name, value))
    return tuple(pairs)


def kafka_security_protocol(raw: str) -> KafkaSecurityProtocol:
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``, in any case."""
    for protocol in KAFKA_SECURITY_PROTOCOLS:
        if raw.upper() == protocol:
            return protocol
    raise ValueError(raw)


def kafka_sasl_mechanism(raw: str) -> KafkaSaslMechanism:
    """``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN``, in any case."""
    for mechanism in KAFKA_SASL_MECHANISMS:
        if raw.upper() == mechanism:
            return mechanism
    raise ValueError(raw)


# Environment variable -> (settings field, parser).
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_URL": ("database_url", str),
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka_bootstrap_servers", str),
    "METERFLOW_KAFKA_SECURITY_PROTOCOL": ("kafka_security_protocol", kafka_security_protocol),
    "METERFLOW_KAFKA_SASL_MECHANISM": ("kafka_sasl_mechanism", kafka_sasl_mechanism),
    "METERFLOW_KAFKA_SASL_USERNAME": ("kafka_sasl_username", str),
    "METERFLOW_KAFKA_SASL_PASSWORD": ("kafka_sasl_password", str),
    "METERFLOW_KAFKA_SSL_CAFILE": ("kafka_ssl_cafile", Path),
    "METERFLOW_HTTP_HOST": ("http_host", str),
    "METERFLOW_HTTP_PORT": ("http_port", int),
    "METERFLOW_TOPIC_PREFIX": ("topic_prefix", str),
    "METERFLOW_DATA_DIR": ("data_dir", Path),
    "METERFLOW_CACHE_DIR": ("cache_dir", Path),
    "METERFLOW_KAFKA_VERSION": ("kafka_version", str),
    "METERFLOW_LOCAL_KAFKA_PORT": ("local_kafka_port", int),
    "METERFLOW_LOCAL_KAFKA_CONTROLLER_PORT": ("local_kafka_controller_port", int),
    "METERFLOW_LOCAL_POSTGRES_PORT": ("local_postgres_port", int),
    "METERFLOW_LOCAL_POSTGRES_SETTINGS": ("local_postgres_settings", postgres_settings),
    "METERFLOW_MAX_BODY_BYTES": ("max_body_bytes", int),
    "METERFLOW_DB_POOL_MIN": ("db_pool_min", int),
    "METERFLOW_DB_POOL_MAX": ("db_pool_max", int),
    "METERFLOW_AUTH_CACHE_TTL_S": ("auth_cache_ttl_s", float),
    "METERFLOW_METER_CACHE_TTL_S": ("meter_cache_ttl_s", float),
    "METERFLOW_PUBLISH_TIMEOUT_S": ("publish_timeout_s", float),
    "METERFLOW_CONSUMER_GROUP": ("consumer_group", str),
    "METERFLOW_FOLD_BATCH_MAX": ("fold_batch_max", int),
    "METERFLOW_FOLD_LANES": ("fold_lanes", int),
    "METERFLOW_CONSUMER_NICE": ("consumer_nice", int),
    "METERFLOW_AGGREGATOR_METRICS_PORT": ("aggregator_metrics_port", int),
    "METERFLOW_CONSUMER_SESSION_TIMEOUT_MS": ("consumer_session_timeout_ms", int),
    "METERFLOW_SHUTDOWN_DEADLINE_S": ("shutdown_deadline_s", float),
    "METERFLOW_LOG_LEVEL": ("log_level", str),
    "METERFLOW_LOG_FORMAT": ("log_format", log_format),
    "METERFLOW_PROGRESS_INTERVAL_S": ("progress_interval_s", float),
    "METERFLOW_RATE_LIMIT_METER_EVENTS_PER_S": ("rate_limit_meter_events_per_s", float),
    "METERFLOW_RATE_LIMIT_STREAM_EVENTS_PER_S": ("rate_limit_stream_events_per_s", float),
    "METERFLOW_RATE_LIMIT_API_LIVE_PER_S": ("rate_limit_api_live_per_s", float),
    "METERFLOW_RATE_LIMIT_API_TEST_PER_S": ("rate_limit_api_test_per_s", float),
    "METERFLOW_RATE_LIMIT_AUTH_FAILURES": ("rate_limit_auth_failures", int),
    "METERFLOW_RATE_LIMIT_AUTH_FAILURES_WINDOW_S": ("rate_limit_auth_failures_window_s", float),
    "METERFLOW_RATE_LIMIT_AUTH_BLOCK_S": ("rate_limit_auth_block_s", float),
    "METERFLOW_MAX_REQUEST_LINE_BYTES": ("max_request_line_bytes", int),
    "METERFLOW_MAX_HEADER_BYTES": ("max_header_bytes", int),
    "METERFLOW_MAX_HEADER_COUNT": ("max_header_count", int),
    "METERFLOW_HEADER_TIMEOUT_S": ("header_timeout_s", float),
    "METERFLOW_BODY_TIMEOUT_S": ("body_timeout_s", float),
    "METERFLOW_KEEP_ALIVE_TIMEOUT_S": ("keep_alive_timeout_s", int),
    "METERFLOW_MAX_CONNECTIONS": ("max_connections", int),
    "METERFLOW_HTTP_REUSE_PORT": ("reuse_port", flag),
    "METERFLOW_INGEST_METRICS_PORT": ("ingest_metrics_port", int),
    "METERFLOW_INGEST_PROCESSES": ("ingest_processes", int),
    "METERFLOW_EVENT_RETENTION_DAYS": ("event_retention_days", int),
    "METERFLOW_MAINTENANCE_INTERVAL_S": ("maintenance_interval_s", float),
    "METERFLOW_ERROR_REPORT_WINDOW_S": ("error_report_window_s", float),
    "METERFLOW_ERROR_REPORT_GRACE_S": ("error_report_grace_s", float),
    "METERFLOW_INVOICE_GRACE_S": ("invoice_grace_s", int),
    "METERFLOW_INVOICE_TICK_S": ("invoice_tick_s", float),
    "METERFLOW_WEBHOOK_TIMEOUT_S": ("webhook_timeout_s", float),
    "METERFLOW_WEBHOOK_MAX_ATTEMPTS": ("webhook_max_attempts", int),
    "METERFLOW_WEBHOOK_BACKOFF_BASE_S": ("webhook_backoff_base_s", float),
    "METERFLOW_WEBHOOK_BACKOFF_MAX_S": ("webhook_backoff_max_s", float),
    "METERFLOW_WEBHOOK_CONCURRENCY": ("webhook_concurrency", int),
    "METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS": ("webhook_allow_private_targets", flag),
    "METERFLOW_ALERTS_CONSUMER_GROUP": ("alerts_consumer_group", str),
    "METERFLOW_ALERTS_METRICS_PORT": ("alerts_metrics_port", int),
}


def environment_variables() -> dict[str, str]:
    """Environment variable name -> settings field, for documentation and ``meterflow config``."""
    return {name: field_name for name, (field_name, _) in _ENV.items()}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment; empty variables count as unset."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (field_name, parse) in _ENV.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field_name] = parse(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name}={raw!r} is not a valid {parse.__name__}") from exc
    settings = Settings().with_overrides(**values)
    if not 1 <= settings.db_pool_min <= settings.db_pool_max:
        raise ConfigurationError("need 1 <= METERFLOW_DB_POOL_MIN <= METERFLOW_DB_POOL_MAX")
    if settings.aggregator.event_retention_days * DAY_S <= MAX_PAST_S:
        # Ingest still accepts events that old; their day's partition must still exist.
        raise ConfigurationError(
            "METERFLOW_EVENT_RETENTION_DAYS must be more than the 35 days an event may be "
            "back-dated"
        )
    if settings.aggregator.maintenance_interval_s <= 0:
        raise ConfigurationError("METERFLOW_MAINTENANCE_INTERVAL_S must be positive")
    if not 0 <= settings.aggregator.invoice_grace_s <= MAX_INVOICE_GRACE_S:
        raise ConfigurationError(
            "METERFLOW_INVOICE_GRACE_S must be between 0 and 259200 (72 hours, as Stripe's)"
        )
    if settings.aggregator.invoice_tick_s <= 0:
        raise ConfigurationError("METERFLOW_INVOICE_TICK_S must be positive")
    if not 0 <= settings.consumers.consumer_nice <= 19:
        raise ConfigurationError("METERFLOW_CONSUMER_NICE must be between 0 and 19")
    _check_rate_limits(settings)
    _check_http_limits(settings)
    _check_ingest_processes(settings)
    _check_kafka_security(settings)
    return settings


def _check_kafka_security(settings: Settings) -> None:
    kafka = settings.kafka
    sasl = kafka.kafka_security_protocol.startswith("SASL_")
    if sasl and not (kafka.kafka_sasl_username and kafka.kafka_sasl_password):
        raise ConfigurationError(
            f"METERFLOW_KAFKA_SECURITY_PROTOCOL={kafka.kafka_security_protocol} needs "
            "METERFLOW_KAFKA_SASL_USERNAME and METERFLOW_KAFKA_SASL_PASSWORD"
        )
    if kafka.kafka_ssl_cafile is not None and not kafka.kafka_ssl_cafile.is_file():
        raise ConfigurationError(f"METERFLOW_KAFKA_SSL_CAFILE: no file {kafka.kafka_ssl_cafile}")


def _check_http_limits(settings: Settings) -> None:
    ingest = settings.ingest
    for name, value in (
        ("METERFLOW_MAX_REQUEST_LINE_BYTES", ingest.max_request_line_bytes),
        ("METERFLOW_MAX_HEADER_BYTES", ingest.max_header_bytes),
        ("METERFLOW_MAX_HEADER_COUNT", ingest.max_header_count),
        ("METERFLOW_HEADER_TIMEOUT_S", ingest.header_timeout_s),
        ("METERFLOW_BODY_TIMEOUT_S", ingest.body_timeout_s),
        ("METERFLOW_KEEP_ALIVE_TIMEOUT_S", ingest.keep_alive_timeout_s),
        ("METERFLOW_MAX_CONNECTIONS", ingest.max_connections),
    ):
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive")


def _check_ingest_processes(settings: Settings) -> None:
    if not 0 <= settings.ingest.ingest_metrics_port <= _MAX_PORT:
        raise ConfigurationError("METERFLOW_INGEST_METRICS_PORT must be a port number (0: none)")
    if settings.launcher.ingest_processes < 1:
        raise ConfigurationError("METERFLOW_INGEST_PROCESSES must be at least 1")


def _check_rate_limits(settings: Settings) -> None:
    ingest = settings.ingest
    rates = (
        ingest.rate_limit_meter_events_per_s,
        ingest.rate_limit_stream_events_per_s,
        ingest.rate_limit_api_live_per_s,
        ingest.rate_limit_api_test_per_s,
        ingest.rate_limit_auth_failures,
    )
    if min(rates) < 0:
        raise ConfigurationError("METERFLOW_RATE_LIMIT_* must be 0 (no limit) or positive")
    if min(ingest.rate_limit_auth_failures_window_s, ingest.rate_limit_auth_block_s) <= 0:
        raise ConfigurationError(
            "METERFLOW_RATE_LIMIT_AUTH_FAILURES_WINDOW_S and METERFLOW_RATE_LIMIT_AUTH_BLOCK_S "
            "must be positive"
        )
