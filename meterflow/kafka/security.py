"""How a Kafka client authenticates and encrypts: the keyword arguments every aiokafka client
(producer, consumer, admin) meterflow makes gets from :class:`KafkaSecuritySettings`."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from meterflow.settings.roles import KafkaSecuritySettings

PLAINTEXT = KafkaSecuritySettings()


def client_security(security: KafkaSecuritySettings) -> dict[str, Any]:
    """aiokafka keyword arguments: the protocol, a TLS context verifying the brokers' names
    (over SSL), and the SASL mechanism and credentials (over SASL_*). Empty for PLAINTEXT."""
    protocol = security.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        cafile = security.kafka_ssl_cafile
        options["ssl_context"] = create_ssl_context(cafile=None if cafile is None else str(cafile))
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options |= {
            "sasl_mechanism": security.kafka_sasl_mechanism,
            "sasl_plain_username": security.kafka_sasl_username,
            "sasl_plain_password": security.kafka_sasl_password,
        }
    return options
