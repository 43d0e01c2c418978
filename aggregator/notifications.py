"""Error reports and webhooks in the aggregator process: the rejected-events consumer, the pass
that closes error-report windows into v2 core events, and the webhook delivery worker."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry

from aggregator.error_reports.closer import ErrorReportCloser
from aggregator.error_reports.consumer import ErrorReportConsumer
from aggregator.webhooks.worker import WebhookDeliveryWorker
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


class EventNotifications:
    """Error reports and webhook delivery as one
    :class:`~meterflow.lifecycle.component.Component`."""

    name = "notifications"

    def __init__(self, settings: Settings, pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
        self.consumer = ErrorReportConsumer(settings, pool, registry)
        self.deliveries = WebhookDeliveryWorker(settings, pool, registry)
        self.closer = ErrorReportCloser(
            settings, pool, registry, on_events=lambda _events: self.deliveries.notify()
        )
        self._started = False
        self._stopping = False

    async def start(self) -> None:
        await self.consumer.start()
        self._started = True

    def ready(self) -> bool:
        return self._started and not self._stopping and self.consumer.ready()

    def request_stop(self) -> None:
        self._stopping = True
        self.consumer.request_stop()
        self.closer.request_stop()
        self.deliveries.request_stop()

    async def run(self) -> None:
        """Consume, close windows and deliver until asked to stop; requests in flight finish."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.consumer.run(), name="error-report-consumer")
            group.create_task(self.closer.run(), name="error-report-closer")
            group.create_task(self.deliveries.run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Leave the rejected-events consumer group."""
        await self.consumer.stop()
