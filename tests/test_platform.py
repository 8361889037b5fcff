"""The pieces around the apps: the broker, Celery tasks, settings, error pages."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from kombu import Connection

from config.celery import app as celery_app
from consent import tasks
from consent.models import DashboardLink, IdempotencyRecord, ServiceAccount
from tests.conftest import IN_CI
from tests.factories import SubjectFactory

BASE_DIR = Path(__file__).resolve().parent.parent


def test_the_broker_carries_a_message_both_ways() -> None:
    if settings.CELERY_BROKER_URL.startswith("memory://") and not IN_CI:
        pytest.skip("Redis unreachable: running on the in-memory broker fallback")
    queue_name = f"parley-test-{uuid.uuid4().hex}"
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=3) as conn:
        queue = conn.SimpleQueue(queue_name)
        try:
            queue.put({"hello": "broker"})
            message = queue.get(timeout=5)
            assert message.payload == {"hello": "broker"}
            message.ack()
        finally:
            queue.clear()
            queue.close()


def test_the_purge_task_is_scheduled_and_registered() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["purge-expired-credentials"]
    assert entry["task"] in celery_app.tasks


@pytest.mark.django_db
def test_the_purge_task_drops_expired_keys_and_links_only() -> None:
    account = ServiceAccount.objects.create(name="svc")
    old = timezone.now() - settings.IDEMPOTENCY_KEY_TTL - timedelta(minutes=1)
    IdempotencyRecord.objects.create(
        account=account,
        key="old",
        fingerprint="x",
        response_status=200,
        response_body={},
        created_at=old,
    )
    IdempotencyRecord.objects.create(
        account=account, key="new", fingerprint="x", response_status=200, response_body={}
    )
    subject = SubjectFactory.create()
    now = timezone.now()
    DashboardLink.objects.create(
        subject=subject, token_hash="a" * 64, expires_at=now - timedelta(1)
    )
    DashboardLink.objects.create(
        subject=subject, token_hash="b" * 64, expires_at=now + timedelta(1)
    )

    result = tasks.purge_expired.apply().get()

    assert result == {"idempotency_records": 1, "dashboard_links": 1}
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert list(DashboardLink.objects.values_list("token_hash", flat=True)) == ["b" * 64]


def _settings_in_subprocess(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY"}}
    return subprocess.run(  # noqa: S603 (our own interpreter and settings)
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = _settings_in_subprocess({"DEBUG": "false"}, "pass")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_debug_is_off_unless_asked() -> None:
    result = _settings_in_subprocess(
        {"SECRET_KEY": "x" * 50},
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_HSTS_SECONDS > 0)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True", "True"]


def test_every_response_carries_a_strict_content_security_policy(client: Client) -> None:
    response = client.get("/api/schema/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response["X-Content-Type-Options"] == "nosniff"


def test_an_unknown_api_path_is_a_problem_not_a_page(client: Client) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_the_health_check_answers_without_the_database(client: Client) -> None:
    # No django_db mark: touching the database here would raise.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.post("/healthz").status_code == 405
