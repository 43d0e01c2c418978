"""The error taxonomy shared by every meterflow process.

One root type; each subclass says whether retrying can help. Errors a client sees, with their HTTP
status and Stripe error ``type``/``code``, derive from it in :mod:`ingest.edge.errors`.
"""

from __future__ import annotations

from typing import ClassVar


class MeterflowError(Exception):
    """Root of every error meterflow raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigurationError(MeterflowError):
    """The process was started with settings it cannot work with."""


class LauncherError(MeterflowError):
    """A local service (Kafka, PostgreSQL) could not be prepared or started."""
