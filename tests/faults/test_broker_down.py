"""Redis, the Celery broker, hung and then down under a live Parley (gunicorn on the
private PostgreSQL, a real Celery worker): consent reads and writes go on, a rollout
can still be started, nothing hangs; webhook deliveries wait in the outbox and the
rollout's batches wait in the database, and both go out once the broker is back.

The Redis stopped is the private one of this test session, never the shared one. Beat
does not run: where beat would send a task, the test sends it every second; and it
restarts the worker if it exited, as a process supervisor would (see `Supervisor`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.celery import app as celery_app
from tests.consent.test_webhooks import Receiver
from tests.faults.conftest import LiveParley
from tests.faults.servers import wait_until
from tests.workers import start_worker, stop_worker, worker_broker

PATH = "/hooks"
PROMPT = 15.0  # seconds: a request that takes longer than this is hung


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    try:
        yield hooks
    finally:
        hooks.stop()


class Supervisor:
    """Keeps one Celery worker running, as systemd or Kubernetes would: a worker can
    exit when Redis goes away while it holds a task (kombu's "Unrecoverable error:
    AttributeError … 'hostname'" while restoring unacknowledged messages)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.started: list[subprocess.Popen[bytes]] = []
        self.keep_running()

    def keep_running(self) -> None:
        if self.started and self.started[-1].poll() is None:
            return
        log_path = self.log_dir / f"worker-{len(self.started)}.log"
        self.started.append(start_worker(name="faults", env=self.env, log_path=log_path))

    def stop(self) -> None:
        for process in self.started:
            stop_worker(process)


def beat_until(
    condition: Callable[[], bool], what: str, supervisor: Supervisor, *tasks: str
) -> None:
    """Sends `tasks` every second, as beat would, until `condition()`."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        supervisor.keep_running()
        for task in tasks:
            celery_app.send_task(task)
        time.sleep(1)


def event_ids(live: LiveParley, external_id: str) -> set[int]:
    rows = live.sql(
        "SELECT e.id FROM consent_consentevent e JOIN consent_subject s "
        "ON s.id = e.subject_id WHERE s.external_id = %s",
        [external_id],
    )
    return {event_id for (event_id,) in rows}


def delivered(receiver: Receiver) -> set[int]:
    return {payload["data"]["event_id"] for payload in list(receiver.received[PATH])}


def phase_status(live: LiveParley, label: str, position: int) -> str:
    [(status,)] = live.sql(
        "SELECT ph.status FROM consent_rolloutphase ph JOIN consent_rollout r "
        "ON r.id = ph.rollout_id JOIN consent_policyversion v ON v.id = r.version_id "
        "WHERE v.label = %s AND ph.position = %s",
        [label, position],
    )
    return str(status)


def test_with_redis_hung_or_down_consent_works_and_everything_goes_out_once_it_is_back(
    live: LiveParley, receiver: Receiver, settings, monkeypatch, tmp_path
) -> None:
    subscribed = live.request(
        "POST",
        "/api/v1/webhooks",
        {"name": "faults", "url": receiver.url(PATH), "events": ["consent.changed"]},
    )
    assert subscribed.status == 201, subscribed.text
    receiver.secrets[PATH] = subscribed.json()["secret"]
    [(rollout_id,)] = live.sql(
        "SELECT r.id FROM consent_rollout r JOIN consent_policyversion v "
        "ON v.id = r.version_id WHERE v.label = '2025-06'"
    )
    worker_env = {
        **live.env,
        "WEBHOOK_BACKOFF_BASE_SECONDS": "1",
        "WEBHOOK_BACKOFF_MAX_SECONDS": "2",
        "WEBHOOK_MAX_ATTEMPTS": "1000",
        "ROLLOUT_BATCH_TIMEOUT_SECONDS": "1",
    }
    with worker_broker(live.redis.url, settings, monkeypatch):
        workers = Supervisor(worker_env, tmp_path)
        try:
            subject = live.register()
            # The pipeline works: registration's defaults arrive.
            beat_until(
                lambda: event_ids(live, subject) <= delivered(receiver),
                "the registration's webhooks",
                workers,
                "consent.webhook_tasks.deliver_webhooks",
            )

            # Hung: Redis accepts connections and never answers. Each write still
            # answers (a publish gives up after its timeouts), and so does a rollout
            # start, whose batches are committed and wait for the watchdog.
            live.redis.freeze()
            try:
                for granted in (False, True):
                    answer = live.choose(subject, "analytics", granted, timeout=PROMPT)
                    assert answer.status == 200, answer.text
                started = live.request(
                    "POST", f"/api/v1/rollouts/{rollout_id}/start", timeout=PROMPT
                )
                assert started.status == 200, started.text
                assert phase_status(live, "2025-06", 1) == "running"
                assert live.check(subject, timeout=PROMPT).status == 200
            finally:
                live.redis.thaw()

            # Down: connections refused.
            live.redis.stop()
            for granted in (False, True, False):
                answer = live.choose(subject, "analytics", granted, timeout=PROMPT)
                assert answer.status == 200, answer.text
            assert live.request("GET", f"/api/v1/subjects/{subject}").status == 200
            assert live.check(subject).status == 200
            assert live.decide(subject).status == 200
            # Every change is kept in the outbox.
            [(kept,)] = live.sql(
                "SELECT COUNT(*) FROM consent_outboxmessage o JOIN consent_subject s "
                "ON s.id = o.subject_id WHERE s.external_id = %s",
                [subject],
            )
            assert kept == len(event_ids(live, subject))

            # Back: every change is delivered, and the rollout's batches run.
            live.redis.start()
            beat_until(
                lambda: (
                    event_ids(live, subject) <= delivered(receiver)
                    and phase_status(live, "2025-06", 1) == "completed"
                ),
                "the webhooks and the rollout's first phase",
                workers,
                "consent.webhook_tasks.deliver_webhooks",
                "consent.tasks.rollout_tick",
            )
            assert receiver.rejected == []
        finally:
            workers.stop()
    wait_until(live.redis.answers, "the private Redis")
