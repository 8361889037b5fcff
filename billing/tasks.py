"""Celery tasks of the billing app: thin wrappers around services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from billing import invoicing, services


@shared_task
def close_last_month() -> dict[str, int]:
    """Monthly (beat, the 1st at 00:30 UTC): starts the new subscription periods, then
    closes the month that has just ended for every account. Safe to run again."""
    now = timezone.now()
    renewed = services.renew_subscriptions(now=now)
    start, _ = services.month_bounds(now)
    last = start - timedelta(days=1)
    issued = invoicing.close_period(year=last.year, month=last.month, now=now)
    return {"renewed": renewed, "issued": issued}
