"""A webhook endpoint that fails (500s, then timeouts) for an hour: consent writes never
wait for it, the retries do not run out within the hour, and everything is delivered,
in order per subject, once it recovers. A slow endpoint holds other deliveries up for
one timeout at most.

The hour passes on a fake clock: the delivery run is called with `now` every 10 s of
it, as beat's `deliver-webhooks` entry would; the receiver is a real HTTP server on
loopback that verifies every signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from consent import webhooks
from consent.choices import DeliveryStatus
from consent.models import WebhookDelivery
from tests.consent.test_webhooks import Receiver, changes_of, choose, event_ids, register, subscribe

pytestmark = pytest.mark.django_db

HOUR = 3600
BEAT = 10  # seconds between delivery runs (CELERY_BEAT_SCHEDULE["deliver-webhooks"])
PEOPLE = ("ana", "bia", "caio")


def collapse(ids: list[int]) -> list[int]:
    """Drops immediate repeats (a resend of what timed out)."""
    return [x for i, x in enumerate(ids) if i == 0 or ids[i - 1] != x]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    try:
        yield hooks
    finally:
        hooks.stop()


def test_the_retry_schedule_outlasts_an_hour_of_outage() -> None:
    """With the settings' values, a delivery failing from the first attempt is still
    pending after an hour, and after any outage the next try is at most the cap away."""
    assert django_settings.CELERY_BEAT_SCHEDULE["deliver-webhooks"]["schedule"] == timedelta(
        seconds=BEAT
    )
    waits = [webhooks.backoff(attempts=n) for n in range(1, webhooks.max_attempts())]
    assert sum(waits, timedelta()) > timedelta(seconds=HOUR)  # 12 attempts: 3 h 25 min
    assert max(waits) == timedelta(seconds=django_settings.WEBHOOK_BACKOFF_MAX_SECONDS)
    assert max(waits) <= timedelta(seconds=HOUR)


def test_an_endpoint_down_for_an_hour_gets_everything_in_order_once_it_recovers(
    receiver: Receiver, settings, django_capture_on_commit_callbacks
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.2
    subscribe(receiver)
    receiver.answer = 500
    sent_in_process = mock.Mock(wraps=webhooks.send)

    # The writes: each one commits and only nudges the delivery task; nothing is sent.
    with (
        mock.patch.object(webhooks, "send", sent_in_process),
        mock.patch("consent.webhook_tasks.deliver_webhooks.delay") as nudge,
        django_capture_on_commit_callbacks(execute=True),
    ):
        for name in PEOPLE:
            register(name)
        for round_ in range(3):
            for name in PEOPLE:
                choose(name, "analytics", round_ % 2 == 0)
    assert nudge.call_count > 0
    sent_in_process.assert_not_called()
    assert receiver.attempts == []

    start = timezone.now()
    webhooks.fan_out(now=start)
    deliveries = WebhookDelivery.objects.all()
    assert deliveries.count() == sum(len(changes_of(name)) for name in PEOPLE)

    # The hour: 500s for half of it, then an endpoint that answers too late (it may
    # have taken the message, but Parley cannot know, so it is no delivery).
    for second in range(0, HOUR, BEAT):
        if second == HOUR // 2:
            receiver.answer, receiver.delay = 204, 0.5  # past WEBHOOK_TIMEOUT_SECONDS
        counts = webhooks.deliver_due(now=start + timedelta(seconds=second))
        assert counts["delivered"] == 0
    assert len(receiver.attempts) >= 10  # it was tried all along
    assert not deliveries.exclude(status=DeliveryStatus.PENDING).exists()
    assert max(d.attempts for d in deliveries) < webhooks.max_attempts()

    # Recovered: everything goes out, within the backoff's cap.
    receiver.delay = 0.0
    recovered = start + timedelta(seconds=HOUR)
    second = 0
    while deliveries.filter(status=DeliveryStatus.PENDING).exists():
        assert second <= settings.WEBHOOK_BACKOFF_MAX_SECONDS + BEAT, "still not delivered"
        webhooks.deliver_due(now=recovered + timedelta(seconds=second))
        second += BEAT
    assert not deliveries.exclude(status=DeliveryStatus.DELIVERED).exists()
    payloads = receiver.received["/hooks"]
    assert receiver.rejected == []
    for name in PEOPLE:
        # At least once: what timed out may have arrived anyway, and is sent again
        # before the subject's next change.
        assert collapse(event_ids(payloads, name)) == changes_of(name), name


def test_a_slow_endpoint_holds_up_other_deliveries_for_one_timeout_at_most(
    receiver: Receiver, settings
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    fast_receiver = Receiver()
    try:
        slow = subscribe(receiver, "/slow")
        fast = subscribe(fast_receiver, "/fast")
        receiver.delay = 1.0  # sleeps past the timeout before answering
        for name in PEOPLE:
            register(name)
            choose(name, "analytics", False)
        webhooks.fan_out()
        # The slow endpoint's deliveries come first in the queue.
        WebhookDelivery.objects.filter(subscription=slow).update(
            next_attempt_at=timezone.now() - timedelta(minutes=1)
        )

        counts = webhooks.deliver_due()

        everything = sum(len(changes_of(name)) for name in PEOPLE)
        # One attempt at the slow endpoint (one timeout), then everything else.
        assert counts == {"delivered": everything, "failed": 1, "dead": 0}
        [tried] = WebhookDelivery.objects.filter(subscription=slow, attempts__gt=0)
        assert "timed out" in tried.last_error.lower()
        assert len(receiver.attempts) <= 1  # it may not have finished reading yet
        for name in PEOPLE:
            assert event_ids(fast_receiver.received["/fast"], name) == changes_of(name)
        assert (
            not WebhookDelivery.objects.filter(subscription=fast)
            .exclude(status=DeliveryStatus.DELIVERED)
            .exists()
        )
    finally:
        fast_receiver.stop()
