"""Process configuration: the only module that reads the environment.

Each process builds one frozen :class:`Settings` in ``main()`` and passes it down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from meterflow.errors import ConfigurationError
from meterflow.rules.events import MAX_PAST_S

DEFAULT_KAFKA_VERSION = "4.2.1"
_DAY_S = 86_400


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meterflow"


def _default_data_dir() -> Path:
    # PostgreSQL refuses to run as root, so the launcher runs it as an unprivileged user; that user
    # must be able to reach the data directory, which rules out root's private home.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/meterflow")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meterflow"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a meterflow process can be told; see the README's configuration reference."""

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    topic_prefix: str = "meterflow."
    data_dir: Path = field(default_factory=_default_data_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    kafka_version: str = DEFAULT_KAFKA_VERSION
    local_kafka_port: int = 19092
    local_kafka_controller_port: int = 19093
    local_postgres_port: int = 15432
    max_body_bytes: int = 1_048_576
    db_pool_min: int = 1
    db_pool_max: int = 10
    auth_cache_ttl_s: float = 30.0
    meter_cache_ttl_s: float = 1.0
    publish_timeout_s: float = 5.0
    consumer_group: str = "meterflow-aggregator"
    fold_batch_max: int = 5000
    # Added to the scheduling niceness of the aggregator and the alert evaluator (0 to 19): they
    # are throughput work, so on a shared machine ingest's requests get the CPU first.
    consumer_nice: int = 10
    aggregator_metrics_port: int = 8081
    consumer_session_timeout_ms: int = 10_000
    shutdown_deadline_s: float = 10.0
    log_level: str = "INFO"
    # Per account and mode, per ingest process; 0 turns a limit off. Stripe's live-mode figures:
    # 1,000 meter events per second on v1/v2 single events, 10,000 on meter_event_stream.
    rate_limit_meter_events_per_s: float = 1000.0
    rate_limit_stream_events_per_s: float = 10_000.0
    # Raw meter events are kept this many whole days: Stripe's 35-day back-dating window plus a
    # margin for aggregator lag.
    event_retention_days: int = 37
    maintenance_interval_s: float = 300.0
    # Asynchronous error reports: rejections are counted per validation window of this length
    # (by receipt time) and reported once the window has been over for the grace period.
    error_report_window_s: float = 10.0
    error_report_grace_s: float = 5.0
    # Webhook delivery: per-request timeout, attempts before giving up, exponential backoff from
    # the base up to the cap, and how many requests one aggregator has in flight.
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 20
    webhook_backoff_base_s: float = 30.0
    webhook_backoff_max_s: float = 21_600.0
    webhook_concurrency: int = 16
    # The alert evaluator (`meterflow alerts`): its consumer group on the usage-changes topic and
    # its metrics port.
    alerts_consumer_group: str = "meterflow-alerts"
    alerts_metrics_port: int = 8082

    def masked(self) -> dict[str, str]:
        """Settings as printable strings, with credentials hidden."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            text = "" if value is None else str(value)
            if f.name == "database_url" and value:
                text = mask_url_password(text)
            out[f.name] = text
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def mask_url_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


# Environment variable -> (settings field, parser).
_ENV: dict[str, tuple[str, type[Any]]] = {
    "DATABASE_URL": ("database_url", str),
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka_bootstrap_servers", str),
    "METERFLOW_HTTP_HOST": ("http_host", str),
    "METERFLOW_HTTP_PORT": ("http_port", int),
    "METERFLOW_TOPIC_PREFIX": ("topic_prefix", str),
    "METERFLOW_DATA_DIR": ("data_dir", Path),
    "METERFLOW_CACHE_DIR": ("cache_dir", Path),
    "METERFLOW_KAFKA_VERSION": ("kafka_version", str),
    "METERFLOW_LOCAL_KAFKA_PORT": ("local_kafka_port", int),
    "METERFLOW_LOCAL_KAFKA_CONTROLLER_PORT": ("local_kafka_controller_port", int),
    "METERFLOW_LOCAL_POSTGRES_PORT": ("local_postgres_port", int),
    "METERFLOW_MAX_BODY_BYTES": ("max_body_bytes", int),
    "METERFLOW_DB_POOL_MIN": ("db_pool_min", int),
    "METERFLOW_DB_POOL_MAX": ("db_pool_max", int),
    "METERFLOW_AUTH_CACHE_TTL_S": ("auth_cache_ttl_s", float),
    "METERFLOW_METER_CACHE_TTL_S": ("meter_cache_ttl_s", float),
    "METERFLOW_PUBLISH_TIMEOUT_S": ("publish_timeout_s", float),
    "METERFLOW_CONSUMER_GROUP": ("consumer_group", str),
    "METERFLOW_FOLD_BATCH_MAX": ("fold_batch_max", int),
    "METERFLOW_CONSUMER_NICE": ("consumer_nice", int),
    "METERFLOW_AGGREGATOR_METRICS_PORT": ("aggregator_metrics_port", int),
    "METERFLOW_CONSUMER_SESSION_TIMEOUT_MS": ("consumer_session_timeout_ms", int),
    "METERFLOW_SHUTDOWN_DEADLINE_S": ("shutdown_deadline_s", float),
    "METERFLOW_LOG_LEVEL": ("log_level", str),
    "METERFLOW_RATE_LIMIT_METER_EVENTS_PER_S": ("rate_limit_meter_events_per_s", float),
    "METERFLOW_RATE_LIMIT_STREAM_EVENTS_PER_S": ("rate_limit_stream_events_per_s", float),
    "METERFLOW_EVENT_RETENTION_DAYS": ("event_retention_days", int),
    "METERFLOW_MAINTENANCE_INTERVAL_S": ("maintenance_interval_s", float),
    "METERFLOW_ERROR_REPORT_WINDOW_S": ("error_report_window_s", float),
    "METERFLOW_ERROR_REPORT_GRACE_S": ("error_report_grace_s", float),
    "METERFLOW_WEBHOOK_TIMEOUT_S": ("webhook_timeout_s", float),
    "METERFLOW_WEBHOOK_MAX_ATTEMPTS": ("webhook_max_attempts", int),
    "METERFLOW_WEBHOOK_BACKOFF_BASE_S": ("webhook_backoff_base_s", float),
    "METERFLOW_WEBHOOK_BACKOFF_MAX_S": ("webhook_backoff_max_s", float),
    "METERFLOW_WEBHOOK_CONCURRENCY": ("webhook_concurrency", int),
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
    settings = Settings(**values)
    if not 1 <= settings.db_pool_min <= settings.db_pool_max:
        raise ConfigurationError("need 1 <= METERFLOW_DB_POOL_MIN <= METERFLOW_DB_POOL_MAX")
    if settings.event_retention_days * _DAY_S <= MAX_PAST_S:
        # Ingest still accepts events that old; their day's partition must still exist.
        raise ConfigurationError(
            "METERFLOW_EVENT_RETENTION_DAYS must be more than the 35 days an event may be "
            "back-dated"
        )
    if settings.maintenance_interval_s <= 0:
        raise ConfigurationError("METERFLOW_MAINTENANCE_INTERVAL_S must be positive")
    if not 0 <= settings.consumer_nice <= 19:
        raise ConfigurationError("METERFLOW_CONSUMER_NICE must be between 0 and 19")
    return settings
