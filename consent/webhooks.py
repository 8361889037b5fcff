"""Webhooks: `consent.changed` and `subject.erased`, announced to subscribed services.

The flow (PRODUCT.md, "Webhooks"):

1. Every consent change writes an `OutboxMessage` in the transaction that made it
   (`enqueue_consent_changes`, `enqueue_subject_erased`), so a rolled-back change is
   never announced and a committed one is never lost. Nothing is written when no
   active subscription lists the event type.
2. `fan_out` turns each outbox message into one `WebhookDelivery` per active
   subscription of its event type.
3. `deliver_due` POSTs due deliveries, signed by the Standard Webhooks scheme, at
   least once, with exponential backoff and a retry limit. Per subscription and
   subject only the oldest pending delivery is eligible, so a later change of a
   subject is never sent before an earlier one. Delivery runs in Celery, after the
   commit: a slow or dead endpoint never holds up a consent write.

Ordering relies on outbox ids growing with commit order for one subject: every
writer locks the subject's row before it writes, so the second change of a subject
is inserted only after the first committed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from standardwebhooks import Webhook

from consent.choices import DeliveryStatus, WebhookEvent
from consent.errors import InvalidValue, NotFound
from consent.models import (
    ConsentEvent,
    OutboxMessage,
    ServiceAccount,
    WebhookDelivery,
    WebhookSubscription,
)

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks marker, not a secret)  # nosec B105
SECRET_BYTES = 32
# The Standard Webhooks specification asks for secrets of 24 to 64 bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
URL_SCHEMES = ("http", "https")
MAX_ERROR_LENGTH = 500
# Any fixed number: the PostgreSQL advisory lock that lets one fan-out run at a time.
_FAN_OUT_LOCK = 7_042_871_001


def _setting(name: str, default: int) -> int:
    value = getattr(settings, name, default)
    if not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"settings.{name} must be a positive number, not {value!r}")
    return int(value)


def max_attempts() -> int:
    return _setting("WEBHOOK_MAX_ATTEMPTS", 12)


def timeout_seconds() -> float:
    return float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 5))


def backoff(*, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: base * 2^(attempts-1), capped."""
    base = _setting("WEBHOOK_BACKOFF_BASE_SECONDS", 10)
    cap = _setting("WEBHOOK_BACKOFF_MAX_SECONDS", 3600)
    exponent = min(max(attempts - 1, 0), 32)  # past the cap anyway; keeps the number small
    return timedelta(seconds=min(cap, base * 2**exponent))


# --- payloads ---------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and `Z`: `2025-06-17T10:00:00.000000Z`.

    The same text in PostgreSQL:
    `to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _changed_payload(
    *,
    event_id: int,
    subject: str,
    purpose: str,
    granted: bool,
    source: str,
    policy_version: str,
    jurisdiction: str,
    occurred_at: datetime,
) -> dict[str, Any]:
    return {
        "type": WebhookEvent.CONSENT_CHANGED.value,
        "timestamp": iso(occurred_at),
        "data": {
            "subject": subject,
            "purpose": purpose,
            "granted": granted,
            "source": str(source),
            "policy_version": policy_version,
            "jurisdiction": jurisdiction,
            "event_id": event_id,
            "occurred_at": iso(occurred_at),
        },
    }


def consent_changed_payload(event: ConsentEvent) -> dict[str, Any]:
    """The body of a `consent.changed` webhook for one consent event.

    `data.subject` is the subject's external id when the event was written (read it
    before an erasure replaces it). Follows the event's relations, so load them with
    `select_related` when building many; `enqueue_consent_changes` reads them in one
    query instead.
    """
    return _changed_payload(
        event_id=event.pk,
        subject=event.subject.external_id,
        purpose=event.purpose.key,
        granted=event.granted,
        source=event.source,
        policy_version=event.policy_version.label,
        jurisdiction=event.jurisdiction.code,
        occurred_at=event.occurred_at,
    )


def subject_erased_payload(*, external_id: str, erased_at: datetime) -> dict[str, Any]:
    """The body of a `subject.erased` webhook: the external id before erasure."""
    return {
        "type": WebhookEvent.SUBJECT_ERASED.value,
        "timestamp": iso(erased_at),
        "data": {"subject": external_id, "erased_at": iso(erased_at)},
    }


# --- selectors ----------------------------------------------------------------------------


def has_subscribers(event_type: str) -> bool:
    """Whether any active subscription lists `event_type` (one query)."""
    active = WebhookSubscription.objects.filter(is_active=True)
    if connection.features.supports_json_field_contains:
        return active.filter(events__contains=[event_type]).exists()
    # SQLite cannot look inside a JSON list; there are only a handful of subscriptions.
    return any(event_type in events for events in active.values_list("events", flat=True))


def subscriptions_of(*, account: ServiceAccount) -> QuerySet[WebhookSubscription]:
    """The subscriptions a service account made, oldest first."""
    return WebhookSubscription.objects.filter(account=account).order_by("id")


def secret_fingerprint(secret: str) -> str:
    """A short SHA-256 fingerprint, so staff can compare secrets without seeing them."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


# --- the outbox ---------------------------------------------------------------------------


def enqueue_consent_changes(*, events: list[ConsentEvent]) -> None:
    """Writes a `consent.changed` outbox message per event, in the caller's transaction.

    Does nothing (beyond one query) when nobody subscribes. The events must be saved;
    their subject's external id is read as it is now, inside the writing transaction.
    """
    if not events or not has_subscribers(WebhookEvent.CONSENT_CHANGED):
        return
    rows = (
        ConsentEvent.objects.filter(pk__in=[event.pk for event in events])
        .order_by("id")
        .values_list(
            "pk",
            "subject_id",
            "subject__external_id",
            "purpose__key",
            "granted",
            "source",
            "policy_version__label",
            "jurisdiction__code",
            "occurred_at",
        )
    )
    now = timezone.now()
    messages = []
    for row in rows:
        pk, subject_pk, external_id, purpose, granted, source, label, code, occurred_at = row
        payload = _changed_payload(
            event_id=pk,
            subject=external_id,
            purpose=purpose,
            granted=granted,
            source=source,
            policy_version=label,
            jurisdiction=code,
            occurred_at=occurred_at,
        )
        messages.append(
            OutboxMessage(
                event_type=WebhookEvent.CONSENT_CHANGED,
                subject_id=subject_pk,
                payload=payload,
                created_at=now,
            )
        )
    OutboxMessage.objects.bulk_create(messages)
    _deliver_after_commit()


def enqueue_subject_erased(*, subject_pk: int, external_id: str, erased_at: datetime) -> None:
    """Writes a `subject.erased` outbox message in the caller's transaction.

    Call it after the erasure's consent events were enqueued, so subscribers see the
    withdrawals before the erasure; `external_id` is the id before erasure.
    """
    if not has_subscribers(WebhookEvent.SUBJECT_ERASED):
        return
    OutboxMessage.objects.create(
        event_type=WebhookEvent.SUBJECT_ERASED,
        subject_id=subject_pk,
        payload=subject_erased_payload(external_id=external_id, erased_at=erased_at),
        created_at=timezone.now(),
    )
    _deliver_after_commit()


# After a failed publish, commits in this process skip the nudge for this long: beat
# sends the delivery task every 10 s anyway, and a broker that hangs would otherwise
# cost every consent write its timeouts (settings: CELERY_BROKER_TRANSPORT_OPTIONS).
BROKER_PAUSE_SECONDS = 10.0
_broker = {"paused_until": 0.0}


def schedule_delivery() -> None:
    """Enqueues the delivery task; register it with `transaction.on_commit`.

    Never raises: the change is committed whatever happens here, and the beat
    schedule delivers what an unreachable broker did not. After a failure it does not
    try again for BROKER_PAUSE_SECONDS.
    """
    if time.monotonic() < _broker["paused_until"]:
        return
    try:
        from consent.webhook_tasks import deliver_webhooks

        deliver_webhooks.delay()
    except Exception:
        _broker["paused_until"] = time.monotonic() + BROKER_PAUSE_SECONDS
        logger.warning("could not enqueue webhook delivery; beat will pick it up", exc_info=True)


def _deliver_after_commit() -> None:
    """Enqueues one delivery task per transaction, however many changes it made."""
    # `run_on_commit` (entries: savepoint ids, callback, robust) is Django's private
    # list; without it every change of a large transaction would enqueue a task.
    pending = getattr(transaction.get_connection(), "run_on_commit", [])
    if any(entry[1] is schedule_delivery for entry in pending):
        return
    transaction.on_commit(schedule_delivery, robust=True)


# --- subscriptions ------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def validate_url(url: str) -> str:
    """An absolute http(s) URL of at most 500 characters."""
    url = (url or "").strip()
    if len(url) > 500:
        raise InvalidValue("The URL is longer than 500 characters.", field="url")
    try:
        URLValidator(schemes=list(URL_SCHEMES))(url)
    except ValidationError:
        raise InvalidValue("Give an absolute http:// or https:// URL.", field="url") from None
    return url


def validate_events(events: Iterable[str]) -> list[str]:
    """At least one event type, each one Parley sends; duplicates are dropped."""
    if isinstance(events, str):
        raise InvalidValue("Give a list of event types.", field="events")
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in WebhookEvent.values]
    if unknown or not chosen:
        raise InvalidValue(
            f"Unknown event types {unknown}; choose from {', '.join(WebhookEvent.values)}."
            if unknown
            else "Give at least one event type.",
            field="events",
        )
    return chosen


def validate_secret(secret: str) -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidValue(f"A secret starts with '{SECRET_PREFIX}'.", field="secret")
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"After '{SECRET_PREFIX}' a secret is base64.", field="secret") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidValue(
            f"A secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes.",
            field="secret",
        )
    return secret


@transaction.atomic
def subscribe(
    *,
    name: str,
    url: str,
    events: Iterable[str],
    secret: str | None = None,
    account: ServiceAccount | None = None,
) -> WebhookSubscription:
    """Subscribes `url` to the event types; generates a secret when none is given.

    The secret is on the returned object; show it once, to whoever subscribed.
    Only changes still waiting in the outbox (not yet fanned out) reach it.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidValue("Give a name of 1 to 100 characters.", field="name")
    return WebhookSubscription.objects.create(
        name=name,
        url=validate_url(url),
        events=validate_events(events),
        secret=validate_secret(secret) if secret is not None else new_secret(),
        account=account,
    )


@transaction.atomic
def unsubscribe(*, subscription_id: int, account: ServiceAccount | None) -> None:
    """Deletes a subscription of `account` with its pending and past deliveries.

    Another account's subscription is reported as not found, not as forbidden.
    """
    deleted, _ = WebhookSubscription.objects.filter(pk=subscription_id, account=account).delete()
    if not deleted:
        raise NotFound(f"No webhook subscription {subscription_id}.")


# --- fan-out ------------------------------------------------------------------------------


def _fan_out_lock() -> None:
    # Two fan-outs in parallel could commit a subject's later message before its
    # earlier one; one at a time keeps deliveries created in outbox order. Waiting
    # (for milliseconds) rather than giving up means a message committed while
    # another fan-out runs is picked up by this one, not left for the next beat.
    if connection.vendor != "postgresql":
        return  # SQLite runs one write transaction at a time anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_FAN_OUT_LOCK])


def fan_out(*, batch_size: int = 1000, now: datetime | None = None) -> int:
    """Creates a delivery per active subscription of its event type for up to
    `batch_size` outbox messages, oldest first, and marks them fanned out.

    Idempotent: the unique (subscription, message) constraint drops repeats. Returns
    how many messages were handled; fan-outs run one at a time.
    """
    now = now or timezone.now()
    with transaction.atomic():
        _fan_out_lock()
        messages = list(
            OutboxMessage.objects.filter(fanned_out=False)
            .order_by("id")
            .values_list("pk", "event_type", "subject_id")[:batch_size]
        )
        if not messages:
            return 0
        subscriptions = list(
            WebhookSubscription.objects.filter(is_active=True)
            .order_by("id")
            .values_list("pk", "events")
        )
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    subscription_id=subscription_pk,
                    message_id=message_pk,
                    subject_id=subject_pk,
                    next_attempt_at=now,
                )
                for message_pk, event_type, subject_pk in messages
                for subscription_pk, events in subscriptions
                if event_type in events
            ],
            ignore_conflicts=True,
            batch_size=1000,
        )
        OutboxMessage.objects.filter(pk__in=[pk for pk, _, _ in messages]).update(fanned_out=True)
    return len(messages)


# --- delivery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one POST gave: success, the HTTP status if any, and why it failed."""

    ok: bool
    status_code: int | None = None
    error: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook endpoint answers 2xx itself; a redirect is a failed delivery (and
    following it would re-send the signed body somewhere the subscriber never named)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def signed_request(
    *, url: str, secret: str, message_id: int, payload: dict[str, Any]
) -> urllib.request.Request:
    """The POST for one message: JSON body and Standard Webhooks headers.

    `webhook-id` is `msg_<outbox id>`, the same on every retry and for every
    subscription, so receivers can drop duplicates. The timestamp is the wall clock
    at signing: receivers refuse timestamps more than five minutes off.
    """
    body = json.dumps(payload, separators=(",", ":"))
    webhook_id = f"msg_{message_id}"
    signed_at = datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, signed_at, body)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "Parley-Webhooks/1.0",
    }
    # urllib would also open file:// and ftp:// URLs; `send` calls only http(s) ones.
    return urllib.request.Request(  # noqa: S310
        url, data=body.encode(), headers=headers, method="POST"
    )


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"[:MAX_ERROR_LENGTH]


def send(delivery: WebhookDelivery) -> Outcome:
    """POSTs one delivery and reports the outcome; never raises for the endpoint's sake.

    The error text names the failure (status, refused connection, timeout), never the
    secret or the request headers.
    """
    subscription = delivery.subscription
    if urllib.parse.urlsplit(subscription.url).scheme not in URL_SCHEMES:
        return Outcome(False, None, "Only http:// and https:// URLs are called.")
    try:
        request = signed_request(
            url=subscription.url,
            secret=subscription.secret,
            message_id=delivery.message_id,
            payload=delivery.message.payload,
        )
    except Exception:  # a secret edited into something unusable
        return Outcome(False, None, "The subscription's secret is not a valid whsec_ secret.")
    try:
        with _opener.open(request, timeout=timeout_seconds()) as response:
            return Outcome(True, response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return Outcome(False, exc.code, f"HTTP {exc.code} {exc.reason}"[:MAX_ERROR_LENGTH])
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        return Outcome(False, None, _describe(exc))
    except Exception as exc:  # whatever an endpoint does, the loop goes on
        logger.exception("unexpected error delivering webhook %s", delivery.pk)
        return Outcome(False, None, _describe(exc))


def due_deliveries(*, now: datetime) -> QuerySet[WebhookDelivery]:
    """Pending deliveries that are due and first in line for their subject.

    Per (subscription, subject) only the delivery of the oldest pending message is
    eligible; delivered and dead ones no longer hold the line.
    """
    earlier = WebhookDelivery.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        subject_id=OuterRef("subject_id"),
        status=DeliveryStatus.PENDING,
        message_id__lt=OuterRef("message_id"),
    )
    return (
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING,
            next_attempt_at__lte=now,
            subscription__is_active=True,
        )
        .filter(~Exists(earlier))
        .order_by("next_attempt_at", "id")
    )


def _record(delivery: WebhookDelivery, outcome: Outcome, *, now: datetime) -> str:
    delivery.attempts += 1
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif delivery.attempts >= max_attempts():
        delivery.status = DeliveryStatus.DEAD
    else:
        delivery.next_attempt_at = now + backoff(attempts=delivery.attempts)
    delivery.save(
        update_fields=[
            "attempts",
            "last_status_code",
            "last_error",
            "status",
            "delivered_at",
            "next_attempt_at",
        ]
    )
    if not outcome.ok:
        logger.warning(
            "webhook delivery %s to subscription %s failed (attempt %s): %s",
            delivery.pk,
            delivery.subscription_id,
            delivery.attempts,
            outcome.error,
        )
    if outcome.ok:
        return "delivered"
    return "dead" if delivery.status == DeliveryStatus.DEAD else "failed"


def deliver_due(
    *, limit: int = 200, now: datetime | None = None, deadline: float | None = None
) -> dict[str, int]:
    """Sends up to `limit` due deliveries, one transaction each; returns counts of
    `delivered`, `failed` (to be retried) and `dead` (retry limit reached).

    Each delivery is locked (`FOR UPDATE SKIP LOCKED`) while it is sent, so two
    workers never send the same one, and a worker never sends a subject's next
    message while another is still sending the previous one. After a subscription
    fails, its other deliveries wait for the next run: a dead endpoint costs one
    timeout per run, not one per subject. `now` decides what is due and when to
    retry (tests pass it to let time pass); `deadline` is a `time.monotonic()` value
    after which no new delivery is started.
    """
    now = now or timezone.now()
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    failing: set[int] = set()
    for _ in range(limit):
        if deadline is not None and time.monotonic() >= deadline:
            break
        with transaction.atomic():
            delivery = (
                due_deliveries(now=now)
                .exclude(subscription_id__in=failing)
                .select_related("subscription", "message")
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if delivery is None:
                break
            outcome = send(delivery)
            counts[_record(delivery, outcome, now=now)] += 1
        if not outcome.ok:
            failing.add(delivery.subscription_id)
    return counts


def pump(
    *, rounds: int = 10, batch_size: int = 1000, limit: int = 200, budget_seconds: float = 50
) -> dict[str, int]:
    """Fans out and delivers until nothing is left, `rounds` rounds pass, or the time
    budget is spent; what remains waits for the next run. Returns the totals."""
    deadline = time.monotonic() + budget_seconds
    totals = {"fanned_out": 0, "delivered": 0, "failed": 0, "dead": 0}
    for _ in range(rounds):
        fanned = fan_out(batch_size=batch_size)
        counts = deliver_due(limit=limit, deadline=deadline)
        totals["fanned_out"] += fanned
        for key, value in counts.items():
            totals[key] += value
        # Go on while the outbox may hold more or deliveries succeed; a round that only
        # failed would try the same dead endpoints again at once.
        more = fanned >= batch_size or counts["delivered"] > 0
        if not more or time.monotonic() >= deadline:
            break
    return totals


# --- staff and housekeeping -----------------------------------------------------------------


@transaction.atomic
def retry_deliveries(*, delivery_ids: Iterable[int], now: datetime | None = None) -> int:
    """Makes pending or dead deliveries due now; returns how many were chosen.

    A dead delivery starts over with a fresh retry budget. Later messages of the same
    subject may have been delivered meanwhile; they are sent again after it, so the
    receiver still ends on the subject's latest state.
    """
    now = now or timezone.now()
    chosen = list(
        WebhookDelivery.objects.select_for_update()
        .filter(pk__in=list(delivery_ids))
        .exclude(status=DeliveryStatus.DELIVERED)
        .order_by("id")
    )
    for delivery in chosen:
        if delivery.status == DeliveryStatus.DEAD:
            WebhookDelivery.objects.filter(
                subscription_id=delivery.subscription_id,
                subject_id=delivery.subject_id,
                message_id__gt=delivery.message_id,
                status=DeliveryStatus.DELIVERED,
            ).update(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now)
    WebhookDelivery.objects.filter(pk__in=[d.pk for d in chosen]).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now
    )
    return len(chosen)


@transaction.atomic
def purge_delivered(*, older_than: datetime) -> dict[str, int]:
    """Deletes deliveries delivered before `older_than`, then outbox messages from
    before it that are fanned out and have no delivery left. Dead and pending
    deliveries stay for staff to see and retry."""
    deliveries, _ = WebhookDelivery.objects.filter(
        status=DeliveryStatus.DELIVERED, delivered_at__lt=older_than
    ).delete()
    messages, _ = (
        OutboxMessage.objects.filter(fanned_out=True, created_at__lt=older_than)
        .exclude(Exists(WebhookDelivery.objects.filter(message_id=OuterRef("pk"))))
        .delete()
    )
    return {"deliveries": deliveries, "outbox_messages": messages}
