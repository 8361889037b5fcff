"""Celery tasks of the consent app: thin wrappers around services."""

from celery import shared_task

from consent import services


@shared_task
def purge_expired() -> dict[str, int]:
    """Drops expired idempotency records and used or expired dashboard links."""
    return services.purge_expired()
