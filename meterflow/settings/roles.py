"""What each process role can be told: the connections every process shares at the top, and one
section per role, so a setting's section says which process it changes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

DEFAULT_KAFKA_VERSION = "4.2.1"
# How log lines are written: ``text`` for people, ``json`` (one object per line) for collectors.
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
# How Kafka clients reach the brokers (Kafka's own names for them).
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KAFKA_SECURITY_PROTOCOLS: tuple[KafkaSecurityProtocol, ...] = (
    "PLAINTEXT",
    "SSL",
    "SASL_PLAINTEXT",
    "SASL_SSL",
)
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
KAFKA_SASL_MECHANISMS: tuple[KafkaSaslMechanism, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


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
class KafkaSecuritySettings:
    """How every Kafka client (producers, consumers, admin) authenticates to the brokers and
    encrypts: PLAINTEXT for the local stack; SASL_SSL with SCRAM-SHA-512 in production."""

    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    # The CA that signed the brokers' certificates; None: the system's trust store.
    kafka_ssl_cafile: Path | None = None


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """``meterflow ingest``: the HTTP API."""

    http_port: int = 8080
    max_body_bytes: int = 1_048_576
    auth_cache_ttl_s: float = 30.0
    meter_cache_ttl_s: float = 1.0
    publish_timeout_s: float = 5.0
    # Per account and mode, per ingest process; 0 turns a limit off. Stripe's live-mode figures:
    # 1,000 meter events per second on v1/v2 single events, 10,000 on meter_event_stream.
    rate_limit_meter_events_per_s: float = 1000.0
    rate_limit_stream_events_per_s: float = 10_000.0
    # Every other endpoint but /healthz, /readyz and /metrics: Stripe's basic limit, 100
    # requests per second in live mode and 25 in test mode.
    rate_limit_api_live_per_s: float = 100.0
    rate_limit_api_test_per_s: float = 25.0
    # Per client address: this many failed authentications (401) within the window block the
    # address for block_s (429 before any key lookup); 0 failures turns it off.
    rate_limit_auth_failures: int = 20
    rate_limit_auth_failures_window_s: float = 10.0
    rate_limit_auth_block_s: float = 60.0
    # The HTTP edge (ingest/edge/protocol.py): a request line longer than this is 414; request
    # headers (bytes of the header lines, or their number) past these are 431.
    max_request_line_bytes: int = 8192
    max_header_bytes: int = 16_384
    max_header_count: int = 100
    # The whole request head must arrive within header_timeout_s of its first byte (or of the
    # connection), the whole body within body_timeout_s of the head; an idle keep-alive
    # connection is closed after keep_alive_timeout_s. Past max_connections open connections, a
    # new one's request is answered 503 with Retry-After, and the connection closed.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: int = 30  # whole seconds, as uvicorn takes it
    max_connections: int = 1000
    # Bind the port with SO_REUSEPORT, so several ingest processes share it and the kernel
    # spreads new connections over them.
    reuse_port: bool = False
    # A port of this process's own for /metrics, /healthz and /readyz; 0: none. /metrics on the
    # API port answers for whichever process the connection reached, so processes sharing the
    # port are scraped here, each on its own.
    ingest_metrics_port: int = 0


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Every Kafka consumer process (the aggregator and the alert evaluator)."""

    # Added to the scheduling niceness (0 to 19): consumers are throughput work, so on a shared
    # machine ingest's requests get the CPU first.
    consumer_nice: int = 10
    # How long a crashed member keeps its partitions before the group reassigns them.
    consumer_session_timeout_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    """``meterflow aggregator``: the fold, error reports, retention."""

    consumer_group: str = "meterflow-aggregator"
    fold_batch_max: int = 5000
    # Lanes of a batch folded concurrently, each a group of whole partitions on its own database
    # connection: PostgreSQL applies one while the aggregator decodes the next.
    fold_lanes: int = 2
    aggregator_metrics_port: int = 8081
    # Raw meter events are kept this many whole days: Stripe's 35-day back-dating window plus a
    # margin for aggregator lag.
    event_retention_days: int = 37
    maintenance_interval_s: float = 300.0
    # Asynchronous error reports: rejections are counted per validation window of this length
    # (by receipt time) and reported once the window has been over for the grace period.
    error_report_window_s: float = 10.0
    error_report_grace_s: float = 5.0
    # Invoicing: a period's invoice is created when the period ends and finalized this long
    # after (Stripe's finalization grace period, at most 72 hours); usage sent meanwhile counts.
    invoice_grace_s: int = 3600
    # How often the closer looks for periods to close, invoices to finalize, thresholds reached
    # and grants expired.
    invoice_tick_s: float = 1.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Webhook delivery in the aggregator: per-request timeout, attempts before giving up,
    exponential backoff from the base up to the cap, requests in flight per process; and which
    targets endpoints may name, checked by ingest at registration and by the aggregator on every
    delivery."""

    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 20
    webhook_backoff_base_s: float = 30.0
    webhook_backoff_max_s: float = 21_600.0
    webhook_concurrency: int = 16
    # Off: only public addresses are targets. On (development only): loopback, private,
    # link-local, carrier-grade NAT and unique-local ones too; metadata services never.
    webhook_allow_private_targets: bool = False


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """``meterflow alerts``: the alert evaluator's consumer group and metrics port."""

    alerts_consumer_group: str = "meterflow-alerts"
    alerts_metrics_port: int = 8082


@dataclass(frozen=True, slots=True)
class LauncherSettings:
    """``meterflow up``: where the local PostgreSQL and Kafka live and listen."""

    data_dir: Path = field(default_factory=_default_data_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    kafka_version: str = DEFAULT_KAFKA_VERSION
    local_kafka_port: int = 19092
    local_kafka_controller_port: int = 19093
    local_postgres_port: int = 15432
    # Server settings for the local PostgreSQL on top of its defaults (name, value).
    local_postgres_settings: tuple[tuple[str, str], ...] = ()
    # How often `up` prints its one-line progress summary (events/s, lag); 0 turns it off.
    progress_interval_s: float = 10.0
    # Ingest processes `up` starts on the API port (SO_REUSEPORT), each supervised on its own.
    ingest_processes: int = 1


_SECTIONS: dict[str, type] = {
    "kafka": KafkaSecuritySettings,
    "ingest": IngestSettings,
    "consumers": ConsumerSettings,
    "aggregator": AggregatorSettings,
    "webhooks": WebhookSettings,
    "alerts": AlertSettings,
    "launcher": LauncherSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a meterflow process can be told; see the README's configuration reference.

    Field names are unique across sections, so :meth:`with_overrides` takes them flat.
    """

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    topic_prefix: str = "meterflow."
    http_host: str = "127.0.0.1"
    db_pool_min: int = 1
    db_pool_max: int = 10
    shutdown_deadline_s: float = 10.0
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    kafka: KafkaSecuritySettings = field(default_factory=KafkaSecuritySettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    consumers: ConsumerSettings = field(default_factory=ConsumerSettings)
    aggregator: AggregatorSettings = field(default_factory=AggregatorSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    launcher: LauncherSettings = field(default_factory=LauncherSettings)

    def value(self, name: str) -> Any:
        """A setting by its flat name, wherever its section."""
        section = _section_of(name)
        return getattr(self if section is None else getattr(self, section), name)

    def masked(self) -> dict[str, str]:
        """Every setting by flat name, as printable strings, with credentials hidden."""
        out: dict[str, str] = {}
        for name in flat_names():
            value = self.value(name)
            text = "" if value is None else str(value)
            if name == "database_url" and value:
                text = mask_url_password(text)
            elif name in _SECRETS and value:
                text = "***"
            out[name] = text
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with settings changed, each named flat (``fold_batch_max=100``)."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            section = _section_of(name)
            if section is None:
                top[name] = value
            else:
                nested.setdefault(section, {})[name] = value
        for section, values in nested.items():
            top[section] = replace(getattr(self, section), **values)
        return replace(self, **top)


_SECRETS = frozenset({"kafka_sasl_password"})
_TOP_LEVEL = tuple(f.name for f in fields(Settings) if f.name not in _SECTIONS)
_SECTION_OF: dict[str, str] = {
    f.name: section for section, cls in _SECTIONS.items() for f in fields(cls)
}


def _section_of(name: str) -> str | None:
    if name in _TOP_LEVEL:
        return None
    try:
        return _SECTION_OF[name]
    except KeyError:
        raise TypeError(f"no setting named {name!r}") from None


def flat_names() -> tuple[str, ...]:
    """Every setting's flat name: the top-level ones, then each section's."""
    return _TOP_LEVEL + tuple(_SECTION_OF)


def mask_url_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
