"""Webhooks: the outbox, signed delivery to a real receiver on loopback, backoff and
ordering per subject, erasure, and the subscription API.

The receiver is a real HTTP server on 127.0.0.1 that verifies every request with the
`standardwebhooks` library, as a subscribing service would. Time passes by handing
`deliver_due` a later `now`; signatures always carry the wall clock.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import UTC, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

import consent.admin_webhooks  # noqa: F401  (registers the admin screens if admin.py does not yet)
from consent import services, webhooks
from consent.choices import DeliveryStatus, Source, WebhookEvent
from consent.errors import InvalidValue
from consent.models import (
    ConsentEvent,
    OutboxMessage,
    ServiceAccount,
    Subject,
    WebhookDelivery,
    WebhookSubscription,
)
from tests.factories import TEST_ACTOR, SubjectFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"
PROBLEM = "application/problem+json"
CHANGED, ERASED = WebhookEvent.CONSENT_CHANGED.value, WebhookEvent.SUBJECT_ERASED.value


# --- a receiving service on loopback -------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.receiver.handle(self.path, headers, body)
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the receiver records requests itself instead of logging them."""


class _Server(ThreadingHTTPServer):
    receiver: Receiver


class Receiver:
    """Verifies each request with the path's secret, then answers `answer`.

    `received` holds the verified payloads it accepted (2xx), per path, in arrival
    order; `attempts` the webhook-ids of every verified request, accepted or not;
    `rejected` the requests whose signature did not verify.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.raw: list[tuple[bytes, dict[str, str]]] = []
        self.attempts: list[str] = []
        self.rejected: list[str] = []
        self.answer = 204
        self.delay = 0.0
        self.port = 0
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        try:
            payload = Webhook(self.secrets[path]).verify(body, headers)
        except (WebhookVerificationError, KeyError, ValueError) as exc:
            with self._lock:
                self.rejected.append(f"{type(exc).__name__}: {exc}")
            return 401
        with self._lock:
            self.attempts.append(headers["webhook-id"])
            self.raw.append((body, headers))
            if 200 <= self.answer < 300:
                self.received[path].append(payload)
        return self.answer


@pytest.fixture
def receiver():
    hooks = Receiver()
    yield hooks
    hooks.stop()


def subscribe(receiver: Receiver, path: str = "/hooks", events=(CHANGED, ERASED), **kw):
    secret = webhooks.new_secret()
    receiver.secrets[path] = secret
    return webhooks.subscribe(
        name=path.strip("/"), url=receiver.url(path), events=list(events), secret=secret, **kw
    )


# --- consent changes through the real services ----------------------------------------------------


def register(external_id: str, country: str = "BR") -> Subject:
    return SubjectFactory.create(external_id=external_id, country=country)


def choose(external_id: str, purpose: str, granted: bool) -> int:
    """Records the subject's choice; returns the event id."""
    state = services.record_choice(
        external_id=external_id,
        purpose_key=purpose,
        granted=granted,
        source=Source.USER_APP,
        actor=TEST_ACTOR,
    )
    return state.event_id


def erase(external_id: str) -> Subject:
    subject = Subject.objects.get(external_id=external_id)
    services.erase_subject(external_id=external_id, actor=TEST_ACTOR)
    subject.refresh_from_db()
    return subject


def drain(now=None, rounds: int = 50) -> None:
    """Fans out and delivers until nothing is due at `now`."""
    for _ in range(rounds):
        fanned = webhooks.fan_out()
        counts = webhooks.deliver_due(now=now)
        if not fanned and not any(counts.values()):
            return
    raise AssertionError("deliveries did not settle")


def event_ids(payloads: list[dict[str, Any]], subject: str | None = None) -> list[int]:
    return [
        p["data"]["event_id"]
        for p in payloads
        if p["type"] == CHANGED and subject in (None, p["data"]["subject"])
    ]


def changes_of(external_id: str) -> list[int]:
    return list(
        ConsentEvent.objects.filter(subject__external_id=external_id)
        .order_by("id")
        .values_list("id", flat=True)
    )


def pending() -> int:
    return WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count()


NOTHING = {"delivered": 0, "failed": 0, "dead": 0}


# --- the outbox --------------------------------------------------------------------------------


def test_a_consent_change_writes_an_outbox_row_in_its_own_transaction(receiver):
    register("alice")
    subscribe(receiver)

    written_inside = []

    def change_then_fail() -> None:
        with transaction.atomic():
            choose("alice", "analytics", False)
            written_inside.append(OutboxMessage.objects.filter(event_type=CHANGED).count())
            raise RuntimeError("the change fails after it was written")

    with pytest.raises(RuntimeError):
        change_then_fail()

    assert written_inside == [1]

    assert OutboxMessage.objects.count() == 0
    event = choose("alice", "analytics", False)
    [message] = OutboxMessage.objects.all()
    assert message.payload["data"]["event_id"] == event
    assert message.subject_id == Subject.objects.get(external_id="alice").pk
    assert message.fanned_out is False


def test_nothing_is_written_to_the_outbox_when_nobody_subscribes(receiver):
    register("alice")
    subscribe(receiver, "/erasures-only", events=[ERASED])
    inactive = subscribe(receiver, "/off")
    WebhookSubscription.objects.filter(pk=inactive.pk).update(is_active=False)

    choose("alice", "analytics", False)

    assert webhooks.has_subscribers(CHANGED) is False
    assert webhooks.has_subscribers(ERASED) is True
    assert OutboxMessage.objects.count() == 0


def test_has_subscribers_is_one_query(receiver, django_assert_num_queries):
    subscribe(receiver)

    with django_assert_num_queries(1):
        assert webhooks.has_subscribers(CHANGED) is True


def test_the_consent_changed_payload_has_the_documented_shape(receiver):
    register("alice", country="DE")
    subscribe(receiver)
    event_id = choose("alice", "analytics", True)
    event = ConsentEvent.objects.get(pk=event_id)
    stamp = event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    payload = webhooks.consent_changed_payload(event)

    assert payload == {
        "type": "consent.changed",
        "timestamp": stamp,
        "data": {
            "subject": "alice",
            "purpose": "analytics",
            "granted": True,
            "source": "user_app",
            "policy_version": event.policy_version.label,
            "jurisdiction": "DE",
            "event_id": event_id,
            "occurred_at": stamp,
        },
    }
    assert OutboxMessage.objects.get().payload == payload


def test_one_delivery_task_is_enqueued_per_transaction_after_the_commit(
    receiver, django_capture_on_commit_callbacks
):
    register("alice")
    subscribe(receiver)

    with (
        mock.patch("consent.webhook_tasks.deliver_webhooks.delay") as delay,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        transaction.atomic(),
    ):
        choose("alice", "analytics", False)
        choose("alice", "analytics", True)
        delay.assert_not_called()

    assert len(callbacks) == 1
    delay.assert_called_once_with()


def test_an_unreachable_broker_does_not_fail_the_committed_change(caplog, monkeypatch):
    # The failure pauses publishing in this process: keep that to this test.
    monkeypatch.setattr(webhooks, "_broker", {"paused_until": 0.0})
    with mock.patch(
        "consent.webhook_tasks.deliver_webhooks.delay", side_effect=OSError("broker down")
    ):
        webhooks.schedule_delivery()

    assert "beat will pick it up" in caplog.text


def test_the_services_write_the_outbox_themselves(receiver):
    subscribe(receiver)
    subject = SubjectFactory.create(external_id="alice", country="BR")
    services.record_choice(
        external_id="alice",
        purpose_key="analytics",
        granted=False,
        source=Source.USER_APP,
        actor=TEST_ACTOR,
    )
    services.erase_subject(external_id="alice", actor=TEST_ACTOR)

    messages = list(OutboxMessage.objects.order_by("id"))
    events = ConsentEvent.objects.filter(subject=subject).order_by("id")
    assert event_ids([m.payload for m in messages]) == list(events.values_list("id", flat=True))
    assert messages[-1].event_type == ERASED
    assert messages[-1].payload["data"]["subject"] == "alice"


# --- fan-out -------------------------------------------------------------------------------------


def test_fan_out_makes_one_delivery_per_active_subscription_of_the_event_type(receiver):
    register("alice")
    everything = subscribe(receiver, "/all")
    changes = subscribe(receiver, "/changes", events=[CHANGED])
    erasures = subscribe(receiver, "/erasures", events=[ERASED])
    off = subscribe(receiver, "/off")
    WebhookSubscription.objects.filter(pk=off.pk).update(is_active=False)
    choose("alice", "analytics", False)

    assert webhooks.fan_out() == 1
    assert webhooks.fan_out() == 0

    message = OutboxMessage.objects.get()
    assert message.fanned_out is True
    assert set(message.deliveries.values_list("subscription_id", flat=True)) == {
        everything.pk,
        changes.pk,
    }
    assert erasures.deliveries.count() == off.deliveries.count() == 0


def test_fan_out_is_idempotent(receiver):
    register("alice")
    subscribe(receiver)
    choose("alice", "analytics", False)
    webhooks.fan_out()
    OutboxMessage.objects.update(fanned_out=False)  # as if a worker died before marking

    webhooks.fan_out()

    assert WebhookDelivery.objects.count() == 1


# --- delivery -------------------------------------------------------------------------------------


def test_every_change_reaches_every_subscriber_signed_and_in_order_per_subject(receiver):
    for name in ("alice", "bob", "carol"):
        register(name)
    subscribe(receiver, "/all")
    subscribe(receiver, "/changes", events=[CHANGED])
    for granted in (False, True, False):
        for name in ("alice", "bob", "carol"):
            choose(name, "analytics", granted)
    choose("bob", "analytics", True)

    drain()

    assert receiver.rejected == []
    made = dict.fromkeys(("alice", "carol"), 3) | {"bob": 4}
    for path in ("/all", "/changes"):
        for name, count in made.items():
            assert event_ids(receiver.received[path], name) == changes_of(name)[-count:]
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED, attempts=1).count() == 20
    assert pending() == 0


def test_requests_carry_the_standard_webhooks_headers(receiver):
    register("alice")
    subscribe(receiver)
    choose("alice", "analytics", False)

    drain()

    [(body, headers)] = receiver.raw
    message = OutboxMessage.objects.get()
    assert headers["webhook-id"] == f"msg_{message.pk}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == message.payload
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.DELIVERED,
        1,
        204,
    )
    assert delivery.delivered_at is not None


def test_the_receiver_refuses_a_tampered_request(receiver):
    register("alice")
    subscribe(receiver)
    choose("alice", "analytics", False)
    drain()
    [(body, headers)] = receiver.raw
    secret = receiver.secrets["/hooks"]
    assert Webhook(secret).verify(body, headers)["data"]["granted"] is False

    forged_body = body.replace(b'"granted":false', b'"granted":true')
    assert forged_body != body
    forged_signature = {
        **headers,
        "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(forged_body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, forged_signature)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)

    # and over the wire: the receiver answers 401 and keeps nothing
    sent = {k: v for k, v in headers.items() if k.startswith(("webhook-", "content-type"))}
    request = urllib.request.Request(  # noqa: S310 (loopback)
        receiver.url("/hooks"), data=forged_body, headers=sent, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    assert refused.value.code == 401
    assert len(receiver.rejected) == 1
    assert len(receiver.received["/hooks"]) == 1


def test_a_subscription_with_another_secret_fails_verification_and_is_retried(receiver):
    register("alice")
    subscription = subscribe(receiver)
    WebhookSubscription.objects.filter(pk=subscription.pk).update(secret=webhooks.new_secret())
    choose("alice", "analytics", False)

    webhooks.fan_out()
    counts = webhooks.deliver_due()

    assert counts == {"delivered": 0, "failed": 1, "dead": 0}
    assert len(receiver.rejected) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.PENDING, 401)
    assert subscription.secret not in delivery.last_error
    assert receiver.secrets["/hooks"] not in delivery.last_error


def test_a_receiver_that_is_down_is_retried_with_exponential_backoff_then_gets_all_in_order(
    receiver,
):
    register("alice")
    subscribe(receiver)
    receiver.answer = 500
    first = choose("alice", "analytics", False)
    webhooks.fan_out()
    head = WebhookDelivery.objects.get()
    now = timezone.now()

    waits = []
    for _ in range(5):
        assert webhooks.deliver_due(now=now) == {"delivered": 0, "failed": 1, "dead": 0}
        head.refresh_from_db()
        waits.append((head.next_attempt_at - now).total_seconds())
        # consent writes go on while the receiver is down
        choose("alice", "analytics", len(waits) % 2 == 0)
        webhooks.fan_out()
        assert webhooks.deliver_due(now=head.next_attempt_at - timedelta(seconds=1)) == NOTHING
        now = head.next_attempt_at

    assert waits == [10, 20, 40, 80, 160]
    assert (head.attempts, head.last_status_code) == (5, 500)
    assert head.last_error.startswith("HTTP 500")
    # only the oldest change was tried: the later ones wait behind it
    assert set(receiver.attempts) == {f"msg_{head.message_id}"}
    assert receiver.received["/hooks"] == []

    receiver.answer = 204
    drain(now=now)

    changes = changes_of("alice")
    assert event_ids(receiver.received["/hooks"]) == changes[changes.index(first) :]
    assert len(event_ids(receiver.received["/hooks"])) == 6
    assert pending() == 0


def test_backoff_is_capped(settings):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 10
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 3600

    waits = [webhooks.backoff(attempts=n).total_seconds() for n in range(1, 13)]

    assert waits[:9] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    assert waits[9:] == [3600, 3600, 3600]
    assert webhooks.backoff(attempts=60_000).total_seconds() == 3600


def test_a_stopped_receiver_gets_everything_in_order_per_subject_once_it_is_back(receiver):
    for name in ("alice", "bob"):
        register(name)
    subscribe(receiver)
    receiver.stop()
    for granted in (False, True, False, True):
        choose("alice", "analytics", granted)
        choose("bob", "analytics", not granted)
    webhooks.fan_out()
    now = timezone.now()

    for _ in range(4):
        counts = webhooks.deliver_due(now=now)
        assert counts["delivered"] == 0
        assert counts["failed"] == 1  # one timeout per run for a dead endpoint, not per subject
        now += timedelta(minutes=10)
    failed = WebhookDelivery.objects.filter(attempts__gt=0)
    assert {d.last_status_code for d in failed} == {None}
    assert all("refused" in d.last_error.lower() for d in failed)

    receiver.start()  # back on the same port
    drain(now=now + timedelta(hours=2))

    for name in ("alice", "bob"):
        assert event_ids(receiver.received["/hooks"], name) == changes_of(name)[-4:]
    assert pending() == 0


def test_a_delivery_is_dead_after_the_retry_limit_and_the_next_one_goes_ahead(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    register("alice")
    subscribe(receiver)
    receiver.answer = 503
    lost = choose("alice", "analytics", False)
    later = choose("alice", "analytics", True)
    webhooks.fan_out()
    now = timezone.now()

    results = []
    for _ in range(3):
        results.append(webhooks.deliver_due(now=now))
        now += timedelta(days=1)

    assert results == [
        {"delivered": 0, "failed": 1, "dead": 0},
        {"delivered": 0, "failed": 1, "dead": 0},
        {"delivered": 0, "failed": 0, "dead": 1},
    ]
    dead = WebhookDelivery.objects.get(message__payload__data__event_id=lost)
    assert (dead.status, dead.attempts, dead.last_status_code) == (DeliveryStatus.DEAD, 3, 503)

    receiver.answer = 200
    assert webhooks.deliver_due(now=now) == {"delivered": 1, "failed": 0, "dead": 0}
    assert event_ids(receiver.received["/hooks"]) == [later]
    assert webhooks.deliver_due(now=now + timedelta(days=30)) == NOTHING


def test_retrying_a_dead_delivery_resends_it_and_then_the_later_ones(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    register("alice")
    subscribe(receiver)
    receiver.answer = 500
    lost = choose("alice", "analytics", False)
    webhooks.fan_out()
    webhooks.deliver_due()
    receiver.answer = 204
    later = choose("alice", "analytics", True)
    drain()
    assert event_ids(receiver.received["/hooks"]) == [later]
    dead = WebhookDelivery.objects.get(status=DeliveryStatus.DEAD)

    assert webhooks.retry_deliveries(delivery_ids=[dead.pk]) == 1
    drain()

    assert event_ids(receiver.received["/hooks"]) == [later, lost, later]
    assert pending() == 0


@pytest.mark.parametrize("status", [301, 307, 400, 404, 410, 500])
def test_an_answer_other_than_2xx_is_a_failed_attempt(receiver, status):
    register("alice")
    subscribe(receiver)
    receiver.answer = status
    choose("alice", "analytics", False)
    webhooks.fan_out()

    assert webhooks.deliver_due() == {"delivered": 0, "failed": 1, "dead": 0}

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.PENDING, status)
    assert delivery.last_error.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [200, 202, 204])
def test_any_2xx_answer_is_a_delivery(receiver, status):
    register("alice")
    subscribe(receiver)
    receiver.answer = status
    choose("alice", "analytics", False)
    webhooks.fan_out()

    assert webhooks.deliver_due() == {"delivered": 1, "failed": 0, "dead": 0}


def test_a_slow_receiver_times_out(receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.2
    register("alice")
    subscribe(receiver)
    receiver.delay = 1.0
    choose("alice", "analytics", False)
    webhooks.fan_out()

    started = time.monotonic()
    assert webhooks.deliver_due() == {"delivered": 0, "failed": 1, "dead": 0}

    assert time.monotonic() - started < 0.9
    assert "timed out" in WebhookDelivery.objects.get().last_error.lower()


def test_a_dead_endpoint_does_not_hold_up_another_subscription(receiver):
    register("alice")
    subscribe(receiver, "/alive")
    dead = subscribe(receiver, "/dead")
    WebhookSubscription.objects.filter(pk=dead.pk).update(url="http://127.0.0.1:9/dead")
    events = [choose("alice", "analytics", g) for g in (False, True)]

    drain()

    assert event_ids(receiver.received["/alive"]) == events
    assert WebhookDelivery.objects.filter(subscription=dead, attempts=1).count() == 1


def test_a_deactivated_subscription_is_not_called(receiver):
    register("alice")
    subscription = subscribe(receiver)
    choose("alice", "analytics", False)
    webhooks.fan_out()
    WebhookSubscription.objects.filter(pk=subscription.pk).update(is_active=False)

    assert webhooks.deliver_due() == NOTHING
    assert receiver.attempts == []


def test_only_http_urls_are_ever_called(receiver):
    register("alice")
    subscription = subscribe(receiver)
    choose("alice", "analytics", False)
    webhooks.fan_out()
    WebhookSubscription.objects.filter(pk=subscription.pk).update(url="file:///etc/passwd")

    assert webhooks.deliver_due()["failed"] == 1
    assert "http" in WebhookDelivery.objects.get().last_error


# --- erasure --------------------------------------------------------------------------------------


def test_erasure_sends_the_withdrawals_then_subject_erased_with_the_old_external_id(receiver):
    register("alice")
    subscribe(receiver, "/all")
    subscribe(receiver, "/changes", events=[CHANGED])
    choose("alice", "analytics", True)

    subject = erase("alice")
    drain()

    assert subject.external_id != "alice"
    assert subject.erased_at is not None
    everything = receiver.received["/all"]
    assert everything[-1]["type"] == ERASED
    assert everything[-1]["data"] == {
        "subject": "alice",
        "erased_at": webhooks.iso(subject.erased_at),
    }
    assert everything[-1]["timestamp"] == everything[-1]["data"]["erased_at"]
    withdrawals = [p["data"] for p in everything if p["data"].get("source") == "erasure"]
    assert withdrawals
    assert all(w["subject"] == "alice" and w["granted"] is False for w in withdrawals)
    assert ERASED not in {p["type"] for p in receiver.received["/changes"]}


# --- two workers ---------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_workers_send_each_delivery_once_and_keep_the_order(receiver):
    names = ["alice", "bob", "carol"]
    for name in names:
        register(name)
    subscribe(receiver)
    for granted in (False, True, False, True):
        for name in names:
            choose(name, "analytics", granted)
    webhooks.fan_out()
    receiver.delay = 0.01
    errors: list[BaseException] = []

    def work() -> None:
        try:
            deadline = time.monotonic() + 30
            while pending() and time.monotonic() < deadline:
                if not any(webhooks.deliver_due(limit=5).values()):
                    time.sleep(0.005)  # the heads are being sent by another worker
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert pending() == 0
    assert len(receiver.attempts) == len(set(receiver.attempts)) == 12
    for name in names:
        assert event_ids(receiver.received["/hooks"], name) == changes_of(name)[-4:]


# --- subscriptions -------------------------------------------------------------------------------


def test_subscribe_generates_a_standard_webhooks_secret():
    one = webhooks.subscribe(name="crm", url="https://crm.example.com/h", events=[CHANGED])
    two = webhooks.subscribe(name="crm", url="https://crm.example.com/h", events=[CHANGED])

    assert one.secret.startswith("whsec_")
    assert len(base64.b64decode(one.secret.removeprefix("whsec_"))) >= 24
    assert one.secret != two.secret
    signature = Webhook(one.secret).sign("msg_1", timezone.now(), "{}")
    assert signature.startswith("v1,")


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("url", {"url": "ftp://crm.example.com/h"}),
        ("url", {"url": "file:///etc/passwd"}),
        ("url", {"url": "javascript:alert(1)"}),
        ("url", {"url": "/relative/path"}),
        ("url", {"url": "https://"}),
        ("url", {"url": "https://crm.example.com/" + "x" * 500}),
        ("events", {"events": []}),
        ("events", {"events": ["consent.deleted"]}),
        ("events", {"events": "consent.changed"}),
        ("secret", {"secret": "not-a-secret"}),
        ("secret", {"secret": "whsec_!!!"}),
        ("secret", {"secret": "whsec_" + base64.b64encode(b"short").decode()}),
        ("name", {"name": " "}),
    ],
)
def test_subscribe_refuses_bad_input(field, kwargs):
    values = {"name": "crm", "url": "https://crm.example.com/h", "events": [CHANGED], **kwargs}

    with pytest.raises(InvalidValue) as refused:
        webhooks.subscribe(**values)

    assert refused.value.field == field
    assert WebhookSubscription.objects.count() == 0


def test_subscribe_accepts_a_given_secret_and_drops_duplicate_events():
    secret = webhooks.new_secret()

    subscription = webhooks.subscribe(
        name="crm", url="http://127.0.0.1:8080/h", events=[CHANGED, CHANGED, ERASED], secret=secret
    )

    assert subscription.secret == secret
    assert subscription.events == [CHANGED, ERASED]


def _account(client_name: str) -> ServiceAccount:
    return ServiceAccount.objects.get(name=client_name)


def test_a_service_subscribes_and_sees_the_secret_once(app_backend):
    body = {"name": "crm", "url": "https://crm.example.com/hooks", "events": [CHANGED]}

    created = app_backend.post(f"{API}/webhooks", body, format="json")

    assert created.status_code == 201, created.content
    data = created.json()
    assert data["secret"].startswith("whsec_")
    assert {k: data[k] for k in ("name", "url", "events", "is_active")} == {
        **body,
        "is_active": True,
    }
    subscription = WebhookSubscription.objects.get(pk=data["id"])
    assert subscription.account == _account("app-backend")
    assert subscription.secret == data["secret"]

    listed = app_backend.get(f"{API}/webhooks")
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [data["id"]]
    assert "secret" not in listed.json()[0]
    assert data["secret"].encode() not in listed.content


def test_a_service_lists_and_deletes_only_its_own_subscriptions(app_backend, ad_server):
    mine = app_backend.post(
        f"{API}/webhooks",
        {"name": "mine", "url": "https://a.example.com/h", "events": [CHANGED]},
        format="json",
    ).json()
    theirs = ad_server.post(
        f"{API}/webhooks",
        {"name": "theirs", "url": "https://b.example.com/h", "events": [ERASED]},
        format="json",
    ).json()

    assert [s["id"] for s in app_backend.get(f"{API}/webhooks").json()] == [mine["id"]]
    refused = app_backend.delete(f"{API}/webhooks/{theirs['id']}")
    assert refused.status_code == 404
    assert refused["Content-Type"].startswith(PROBLEM)
    assert WebhookSubscription.objects.filter(pk=theirs["id"]).exists()

    assert app_backend.delete(f"{API}/webhooks/{mine['id']}").status_code == 204
    assert not WebhookSubscription.objects.filter(pk=mine["id"]).exists()
    assert app_backend.delete(f"{API}/webhooks/{mine['id']}").status_code == 404
    assert app_backend.delete(f"{API}/webhooks/not-a-number").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"events": ["consent.deleted"]}, "events.0"),
        ({"events": []}, "events"),
        ({"url": "ftp://crm.example.com/h"}, "url"),
        ({"url": "crm.example.com"}, "url"),
        ({"secret": "whsec_short"}, "secret"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_subscriptions_are_a_400_naming_the_field(ad_server, change, field):
    body = {"name": "crm", "url": "https://crm.example.com/hooks", "events": [CHANGED], **change}

    response = ad_server.post(f"{API}/webhooks", body, format="json")

    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    assert field in {e["field"] for e in response.json()["errors"]}
    assert WebhookSubscription.objects.count() == 0


def test_the_personas_and_webhooks(ad_server, policy_tool, outsider, anonymous):
    body = {"name": "crm", "url": "https://crm.example.com/hooks", "events": [CHANGED]}

    assert ad_server.post(f"{API}/webhooks", body, format="json").status_code == 201
    assert policy_tool.get(f"{API}/webhooks").status_code == 403
    assert policy_tool.post(f"{API}/webhooks", body, format="json").status_code == 403
    assert outsider.get(f"{API}/webhooks").status_code == 401
    assert anonymous.post(f"{API}/webhooks", body, format="json").status_code == 401
    assert WebhookSubscription.objects.count() == 1


def test_the_subscription_list_takes_a_fixed_number_of_queries(
    ad_server, django_assert_num_queries
):
    for n in range(3):
        webhooks.subscribe(
            name=f"s{n}",
            url="https://crm.example.com/h",
            events=[CHANGED],
            account=_account("ad-server"),
        )
    assert ad_server.get(f"{API}/webhooks").status_code == 200  # warm up the token

    # the subscriptions (the token is cached since the warm-up)
    with django_assert_num_queries(1):
        response = ad_server.get(f"{API}/webhooks")

    assert len(response.json()) == 3


# --- admin and housekeeping ----------------------------------------------------------------------


@pytest.fixture
def staff_client() -> Client:
    User.objects.create_superuser("root-staff", "staff@parley.invalid", "pw-for-tests-only")
    client = Client()
    client.force_login(User.objects.get(username="root-staff"))
    return client


def test_staff_see_deliveries_but_never_a_secret(receiver, staff_client, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    register("alice")
    subscription = subscribe(receiver)
    receiver.answer = 500
    choose("alice", "analytics", False)
    drain()

    pages = [
        "/admin/consent/webhooksubscription/",
        f"/admin/consent/webhooksubscription/{subscription.pk}/change/",
        "/admin/consent/outboxmessage/",
        "/admin/consent/webhookdelivery/",
        "/admin/consent/webhookdelivery/?status__exact=dead",
        f"/admin/consent/webhookdelivery/?subscription__id__exact={subscription.pk}",
    ]
    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
        assert subscription.secret.encode() not in response.content, page
    listing = staff_client.get("/admin/consent/webhookdelivery/").content.decode()
    assert "HTTP 500" in listing


def test_staff_retry_a_dead_delivery_now(receiver, staff_client, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    register("alice")
    subscribe(receiver)
    receiver.answer = 500
    event = choose("alice", "analytics", False)
    drain()
    dead = WebhookDelivery.objects.get(status=DeliveryStatus.DEAD)

    response = staff_client.post(
        "/admin/consent/webhookdelivery/",
        {"action": "retry_now", "_selected_action": [dead.pk]},
    )

    assert response.status_code == 302
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == (DeliveryStatus.PENDING, 0)
    receiver.answer = 204
    drain()
    assert event_ids(receiver.received["/hooks"]) == [event]


def test_staff_add_a_subscription_and_the_secret_is_generated(staff_client):
    response = staff_client.post(
        "/admin/consent/webhooksubscription/add/",
        {
            "name": "crm",
            "url": "https://crm.example.com/h",
            "events": [CHANGED],
            "secret": "",
            "is_active": "on",
        },
    )

    assert response.status_code == 302, response.content
    subscription = WebhookSubscription.objects.get()
    assert subscription.secret.startswith("whsec_")
    assert subscription.events == [CHANGED]

    # changing it without typing a secret keeps the secret
    staff_client.post(
        f"/admin/consent/webhooksubscription/{subscription.pk}/change/",
        {"name": "crm2", "url": "https://crm.example.com/h", "events": [CHANGED, ERASED]},
    )
    changed = WebhookSubscription.objects.get()
    assert (changed.name, changed.secret) == ("crm2", subscription.secret)


def test_purge_removes_old_delivered_messages_and_keeps_dead_ones(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    register("alice")
    subscribe(receiver, "/ok")
    broken = subscribe(receiver, "/broken")
    receiver.secrets["/broken"] = webhooks.new_secret()  # every request to it is refused
    choose("alice", "analytics", False)
    drain()
    assert WebhookDelivery.objects.filter(subscription=broken, status=DeliveryStatus.DEAD).exists()

    counts = webhooks.purge_delivered(older_than=timezone.now() + timedelta(days=1))

    assert counts == {"deliveries": 1, "outbox_messages": 0}
    assert list(WebhookDelivery.objects.values_list("status", flat=True)) == [DeliveryStatus.DEAD]
    WebhookDelivery.objects.all().delete()
    assert webhooks.purge_delivered(older_than=timezone.now() + timedelta(days=1)) == {
        "deliveries": 0,
        "outbox_messages": 1,
    }


def test_the_task_fans_out_and_delivers(receiver):
    from consent.webhook_tasks import deliver_webhooks, purge_webhooks

    register("alice")
    subscribe(receiver)
    event = choose("alice", "analytics", False)

    totals = deliver_webhooks()

    assert totals == {"fanned_out": 1, "delivered": 1, "failed": 0, "dead": 0}
    assert event_ids(receiver.received["/hooks"]) == [event]
    assert purge_webhooks() == {"deliveries": 0, "outbox_messages": 0}


def test_the_task_stops_when_only_failures_remain(receiver):
    from consent.webhook_tasks import deliver_webhooks

    for name in ("alice", "bob", "carol"):
        register(name)
    subscription = subscribe(receiver)
    WebhookSubscription.objects.filter(pk=subscription.pk).update(url="http://127.0.0.1:9/dead")
    for name in ("alice", "bob", "carol"):
        choose(name, "analytics", False)

    totals = deliver_webhooks()

    # one attempt at the dead endpoint, not one per subject or per round
    assert totals == {"fanned_out": 3, "delivered": 0, "failed": 1, "dead": 0}
