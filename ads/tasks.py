"""Celery tasks of the ads app: thin wrappers that call a service."""

from __future__ import annotations

from celery import shared_task

from ads import signals


@shared_task
def purge_signals() -> int:
    """Hourly: deletes signals past the retention period and recomputes the features
    of the subjects who had them; returns how many signals were deleted."""
    return signals.purge_expired_signals()
