"""Process configuration: one frozen :class:`Settings` per process, built once in ``main()``.

:mod:`meterflow.settings.environment` is the only module that reads the environment.
"""

from meterflow.settings.environment import environment_variables, load_settings
from meterflow.settings.roles import (
    LOG_FORMATS,
    AggregatorSettings,
    AlertSettings,
    ConsumerSettings,
    IngestSettings,
    LauncherSettings,
    LogFormat,
    Settings,
    WebhookSettings,
    mask_url_password,
)

__all__ = [
    "LOG_FORMATS",
    "AggregatorSettings",
    "AlertSettings",
    "ConsumerSettings",
    "IngestSettings",
    "LauncherSettings",
    "LogFormat",
    "Settings",
    "WebhookSettings",
    "environment_variables",
    "load_settings",
    "mask_url_password",
]
