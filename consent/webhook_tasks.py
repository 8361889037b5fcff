"""Celery tasks of the webhooks: thin wrappers around `consent.webhooks`."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from consent import webhooks


@shared_task
def deliver_webhooks() -> dict[str, int]:
    """Fans out new outbox messages and sends due deliveries, for a bounded number
    of rounds and under a minute; enqueued after each commit that wrote the outbox
    and run by beat as a safety net for retries."""
    return webhooks.pump()


@shared_task
def purge_webhooks() -> dict[str, int]:
    """Deletes deliveries delivered more than WEBHOOK_RETENTION_DAYS ago (default 7)
    and the outbox messages nothing refers to any more."""
    days = int(getattr(settings, "WEBHOOK_RETENTION_DAYS", 7))
    return webhooks.purge_delivered(older_than=timezone.now() - timedelta(days=days))
