"""Webhooks through a real Celery worker process, Redis and PostgreSQL (no eager mode).

Each test starts `celery -A config worker` (prefork, two processes) against the test
database and a Redis database of its own, subscribes a receiver on loopback (a real
HTTP server verifying every request with `standardwebhooks`), and changes consent
through `consent.services` only. The test process never delivers anything itself:
the commit hook (`webhooks.schedule_delivery`) queues the delivery task, and where
retries are needed the test sends `deliver_webhooks` every second, as beat would.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Max

from consent import webhooks
from consent.choices import DeliveryStatus
from consent.models import OutboxMessage, WebhookDelivery
from consent.webhook_tasks import deliver_webhooks
from tests.consent.test_webhooks import (
    CHANGED,
    Receiver,
    changes_of,
    choose,
    event_ids,
    register,
    subscribe,
)
from tests.workers import database_url, start_worker, stop_worker, worker_broker_url
from tests.workers import worker_broker as use_worker_broker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BASE_DIR = Path(__file__).resolve().parents[2]
WORKER_BROKER = worker_broker_url(9)  # used by no other test
DEADLINE = 60.0  # seconds: generous, a benchmark may share the machine
PROMPT = 5.0  # seconds a consent write may take while the receiver is failing
PATH = "/hooks"
SUBJECTS = ("alice", "bob", "carol", "dave")


# --- the broker and the worker ----------------------------------------------------------


@pytest.fixture
def broker(settings, monkeypatch) -> Iterator[str]:
    """The test process and the worker share Redis database 9, emptied before and after."""
    with use_worker_broker(WORKER_BROKER, settings, monkeypatch) as url:
        yield url


def _worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": WORKER_BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "WEBHOOK_BACKOFF_BASE_SECONDS": "1",
        "WEBHOOK_BACKOFF_MAX_SECONDS": "2",
        # Far above what these tests spend, so a slow machine never turns a delivery dead.
        "WEBHOOK_MAX_ATTEMPTS": "1000",
        "WEBHOOK_TIMEOUT_SECONDS": "5",
        "DEBUG": "true",
    }


@pytest.fixture
def worker(broker, tmp_path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """start() runs a worker in its own process group and waits until it is ready;
    every worker started is stopped at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "worker.log"

    def start() -> subprocess.Popen[bytes]:
        process = start_worker(
            name="webhook-test", env=_worker_env(), log_path=log_path, timeout=DEADLINE
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            stop_worker(process)


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def nothing_in_process(monkeypatch) -> Iterator[list[str]]:
    """Counts commit hooks, and records any fan-out or delivery in the test process
    (there must be none: the worker does it all). Yields the list of hook runs."""
    hook_runs: list[str] = []
    in_process: list[str] = []
    schedule = webhooks.schedule_delivery

    def counting_schedule() -> None:
        hook_runs.append("schedule_delivery")
        schedule()

    def forbidden(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            in_process.append(name)
            raise AssertionError(f"webhooks.{name} ran in the test process")

        return call

    # `_deliver_after_commit` looks the hook up by its module-level name.
    monkeypatch.setattr(webhooks, "schedule_delivery", counting_schedule)
    for name in ("fan_out", "deliver_due", "pump", "send"):
        monkeypatch.setattr(webhooks, name, forbidden(name))
    yield hook_runs
    assert in_process == []


# --- observation ---------------------------------------------------------------------------


def timed(write: Callable[[], Any]) -> float:
    """Runs a consent write; returns how long it took."""
    started = time.monotonic()
    write()
    return time.monotonic() - started


def interleaved_writes(round_: int) -> list[Callable[[], Any]]:
    """Round 0 registers the subjects between choices of those already registered;
    later rounds are choices only, each subject in turn."""
    writes: list[Callable[[], Any]] = []
    for index, name in enumerate(SUBJECTS):
        if round_ == 0:
            writes.append(partial(register, name, country="BR"))
            if index:
                earlier = SUBJECTS[index - 1]
                writes.append(partial(choose, earlier, "analytics", False))
        else:
            granted = (round_ + index) % 2 == 0
            writes.append(partial(choose, name, "analytics", granted))
    return writes


def collapse(ids: list[int]) -> list[int]:
    """Drops immediate repeats: at least once allows a resend, and a resend of a
    subject's message always comes before its next message."""
    return [x for i, x in enumerate(ids) if i == 0 or ids[i - 1] != x]


def everything_arrived(hooks: Receiver) -> bool:
    payloads = list(hooks.received[PATH])
    return all(set(changes_of(name)) <= set(event_ids(payloads, name)) for name in SUBJECTS)


def wait_for(condition: Callable[[], bool], what: str, *, beat: bool = False) -> float:
    """Polls until `condition()`; with `beat`, sends the delivery task every second as
    beat would. Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + DEADLINE
    next_beat = started
    while True:
        now = time.monotonic()
        if beat and now >= next_beat:
            deliver_webhooks.delay()
            next_beat = now + 1.0
        if condition():
            return time.monotonic() - started
        if now > deadline:
            pytest.fail(f"timed out after {DEADLINE:.0f} s waiting for {what}")
        time.sleep(0.2)


def assert_in_order_per_subject(hooks: Receiver) -> None:
    payloads = list(hooks.received[PATH])
    assert hooks.rejected == []  # every request verified with the subscription's secret
    assert {p["type"] for p in payloads} == {CHANGED}
    for name in SUBJECTS:
        expected = changes_of(name)
        assert len(expected) >= 3, name  # the defaults of registration, then choices
        assert collapse(event_ids(payloads, name)) == expected, name
    # The receiver's dedupe key, `webhook-id`, grows with the outbox id per subject.
    by_event = {
        m.payload["data"]["event_id"]: m.pk
        for m in OutboxMessage.objects.filter(event_type=CHANGED)
    }
    for name in SUBJECTS:
        message_ids = [by_event[e] for e in collapse(event_ids(payloads, name))]
        assert message_ids == sorted(message_ids), name
    assert not OutboxMessage.objects.filter(fanned_out=False).exists()
    statuses = set(WebhookDelivery.objects.values_list("status", flat=True))
    assert statuses == {DeliveryStatus.DELIVERED}
    assert WebhookDelivery.objects.count() == OutboxMessage.objects.count()


# --- the tests ---------------------------------------------------------------------------------


def test_changes_reach_the_receiver_through_the_worker_queued_by_the_commit_hook(
    worker, hooks, nothing_in_process
):
    worker()
    subscribe(hooks, PATH, events=[CHANGED])

    transactions = 0
    for round_ in range(3):
        for write in interleaved_writes(round_):
            write()
            transactions += 1

    # Only the commit hooks queued work; nothing else sends the task in this test.
    assert nothing_in_process == ["schedule_delivery"] * transactions
    wait_for(lambda: everything_arrived(hooks), "every change to arrive")
    wait_for(
        lambda: not WebhookDelivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists(),
        "the worker to record the deliveries",
    )

    assert_in_order_per_subject(hooks)
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}


def test_a_failing_receiver_holds_up_no_write_and_gets_everything_in_order_once_back(
    worker, hooks, nothing_in_process
):
    worker()
    subscribe(hooks, PATH, events=[CHANGED])
    durations: list[float] = []

    # 1. The receiver answers 500: the writes still commit at once, the worker retries.
    hooks.answer = 500
    for round_ in range(2):
        durations += [timed(write) for write in interleaved_writes(round_)]
    wait_for(
        lambda: (
            len(hooks.attempts) >= 6
            and (WebhookDelivery.objects.aggregate(most=Max("attempts"))["most"] or 0) >= 2
        ),
        "retries against the failing receiver",
        beat=True,
    )
    assert sum(len(v) for v in hooks.received.values()) == 0
    assert set(
        WebhookDelivery.objects.filter(attempts__gt=0).values_list("last_status_code", flat=True)
    ) == {500}

    # 2. The receiver is down (connections refused): writes still go through at once.
    hooks.stop()
    durations += [timed(write) for write in interleaved_writes(2)]
    refused = WebhookDelivery.objects.filter(
        last_status_code__isnull=True, last_error__icontains="refused"
    )
    wait_for(refused.exists, "a refused attempt", beat=True)
    durations += [timed(write) for write in interleaved_writes(3)]

    assert max(durations) < PROMPT, durations
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 0
    assert not WebhookDelivery.objects.filter(status=DeliveryStatus.DEAD).exists()
    failed_attempts = len(hooks.attempts)

    # 3. It is back, on the same port, answering 204: rounds as beat runs them catch up.
    hooks.answer = 204
    hooks.start()
    wait_for(lambda: everything_arrived(hooks), "every change to arrive after recovery", beat=True)
    wait_for(
        lambda: not WebhookDelivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists(),
        "the worker to record the deliveries",
        beat=True,
    )

    assert_in_order_per_subject(hooks)
    assert failed_attempts >= 6
    assert WebhookDelivery.objects.filter(attempts__gt=1).exists()
    assert len(nothing_in_process) == 4 * len(SUBJECTS) + (len(SUBJECTS) - 1)
