"""Celery tasks of the consent app: thin wrappers that take ids and call a service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from consent import rollouts, services
from consent.webhook_tasks import deliver_webhooks, purge_webhooks

__all__ = ["deliver_webhooks", "purge_webhooks"]


@shared_task
def purge_expired() -> dict[str, int]:
    """Drops expired idempotency records and used or expired dashboard links."""
    return services.purge_expired()


@shared_task
def rollout_tick() -> dict[str, int]:
    """Every minute: start due phases, re-dispatch stuck batches, close finished ones."""
    return rollouts.tick()


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=5,
    retry_jitter=True,
    max_retries=settings.ROLLOUT_BATCH_MAX_ATTEMPTS,
)
def run_rollout_batch(self: object, batch_id: int) -> str:
    """One batch of a rollout phase, in one transaction (idempotent)."""
    return rollouts.run_batch(batch_id=batch_id)
