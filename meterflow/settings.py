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

DEFAULT_KAFKA_VERSION = "4.2.1"


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
    aggregator_metrics_port: int = 8081
    consumer_session_timeout_ms: int = 10_000
    shutdown_deadline_s: float = 10.0
    log_level: str = "INFO"

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
    "METERFLOW_AGGREGATOR_METRICS_PORT": ("aggregator_metrics_port", int),
    "METERFLOW_CONSUMER_SESSION_TIMEOUT_MS": ("consumer_session_timeout_ms", int),
    "METERFLOW_SHUTDOWN_DEADLINE_S": ("shutdown_deadline_s", float),
    "METERFLOW_LOG_LEVEL": ("log_level", str),
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
    return settings
