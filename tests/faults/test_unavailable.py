"""Every path maps an unavailable database or broker to a 503 with Retry-After, in
process: DRF views, both fast lanes, dashboard and admin pages. The failure is
injected with `connection.execute_wrapper`, so the real queries of each path meet it.
The live versions (a real restart, a real Redis outage) are in the other files here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import kombu.exceptions
import psycopg
import pytest
import redis.exceptions
from django.db import OperationalError, connection
from django.test import Client
from rest_framework.test import APIClient

from consent import api, rollouts, services, webhooks
from consent.choices import RolloutStatus
from consent.models import Rollout, RolloutBatch, RolloutPhase
from tests.connections import second_connection
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
PASS_THROUGH = ("SAVEPOINT", "RELEASE", "ROLLBACK")  # the test's own transaction goes on


@contextmanager
def database_down(error: Callable[[], Exception] | None = None) -> Iterator[list[str]]:
    """Every query of this thread fails as on a lost server; yields the queries tried."""
    tried: list[str] = []

    def fail(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(PASS_THROUGH):
            return execute(sql, params, many, context)
        tried.append(sql)
        raise (error or (lambda: OperationalError("server closed the connection")))()

    with connection.execute_wrapper(fail):
        yield tried


def client_for(*scopes: str) -> APIClient:
    _, raw = services.create_service_token(name="faults", scopes=scopes)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def assert_unavailable_problem(response: Any, service: str = "database") -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == PROBLEM
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "type": "urn:parley:problem:service-unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": f"The {service} is unavailable; retry shortly.",
        "instance": response.wsgi_request.path,
    }


def assert_unavailable_page(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "5"
    text = response.content.decode()
    assert "<h1>Temporarily unavailable</h1>" in text
    assert "Traceback" not in text


@pytest.fixture
def reader() -> APIClient:
    SubjectFactory.create(external_id="alice", country="DE", birth_year=1990)
    client = client_for("consent:read", "consent:write", "ads:decide")
    # The token is now in the process's cache: the fast lanes take the request.
    assert client.get("/api/v1/subjects/alice").status_code == 200
    return client


def test_a_drf_view_answers_503_when_the_database_is_down(reader: APIClient) -> None:
    with database_down() as tried:
        read = reader.get("/api/v1/subjects/alice")
        write = reader.put(
            "/api/v1/subjects/alice/consents/analytics", {"granted": False}, format="json"
        )

    assert tried
    assert_unavailable_problem(read)
    assert_unavailable_problem(write)


def test_the_consent_check_fast_lane_answers_503_itself(reader: APIClient, monkeypatch) -> None:
    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the DRF view answered, not the fast lane")

    monkeypatch.setattr(api.ConsentChecksView, "post", not_here)
    with database_down() as tried:
        response = reader.post(
            "/api/v1/consent-checks", {"purpose": "analytics", "subjects": ["alice"]}, format="json"
        )

    assert tried
    assert_unavailable_problem(response)


def test_the_ad_decision_fast_lane_answers_503_itself(reader: APIClient, monkeypatch) -> None:
    from ads import decisions_api

    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the DRF view answered, not the fast lane")

    monkeypatch.setattr(decisions_api.DecisionsView, "post", not_here)
    context = {"country": "DE", "language": "de"}
    body = {"subject": "alice", "placement": "status", "context": context}
    with database_down() as tried:
        response = reader.post("/api/v1/ads/decisions", body, format="json")

    assert tried
    assert_unavailable_problem(response)


def test_psycopg_errors_from_a_raw_connection_are_a_503_too(reader: APIClient) -> None:
    with database_down(lambda: psycopg.OperationalError("the connection is lost")):
        check = reader.post(
            "/api/v1/consent-checks", {"purpose": "analytics", "subjects": ["alice"]}, format="json"
        )
        read = reader.get("/api/v1/subjects/alice")

    assert_unavailable_problem(check)
    assert_unavailable_problem(read)


def test_dashboard_and_admin_pages_answer_a_readable_503_page(pat: Client) -> None:
    pat.raise_request_exception = False
    visitor = Client(raise_request_exception=False)
    with database_down() as tried:
        link = visitor.get("/dashboard/login/some-token")
        admin = pat.get("/admin/")

    assert len(tried) >= 2
    assert_unavailable_page(link)
    assert_unavailable_page(admin)


def test_the_503_page_speaks_the_visitors_language(db: None) -> None:
    visitor = Client(raise_request_exception=False, HTTP_ACCEPT_LANGUAGE="fr")
    with database_down():
        response = visitor.get("/dashboard/login/some-token")

    assert response.status_code == 503
    assert '<html lang="fr">' in response.content.decode()
    assert "<h1>Temporairement indisponible</h1>" in response.content.decode()


def test_broker_errors_reaching_a_view_are_a_503(reader: APIClient, monkeypatch) -> None:
    down = kombu.exceptions.OperationalError("Error 111 connecting to redis. Connection refused.")
    monkeypatch.setattr(api.selectors, "subject_consents", mock.Mock(side_effect=down))
    assert_unavailable_problem(
        reader.get("/api/v1/subjects/alice/consents"), service="message broker"
    )

    visitor = Client(raise_request_exception=False)
    with database_down(lambda: redis.exceptions.ConnectionError("Connection refused")):
        assert_unavailable_page(visitor.get("/dashboard/login/some-token"))


def test_other_errors_stay_a_500(reader: APIClient) -> None:
    with database_down(lambda: RuntimeError("a bug")):
        response = reader.get("/api/v1/subjects/alice")

    assert response.status_code == 500
    assert response.json()["type"] == "urn:parley:problem:internal-error"


# --- publishing to a broker that is down -------------------------------------------------


def test_after_a_failed_publish_commits_skip_the_broker_for_a_while(monkeypatch) -> None:
    monkeypatch.setattr(webhooks, "_broker", {"paused_until": 0.0})
    with mock.patch(
        "consent.webhook_tasks.deliver_webhooks.delay",
        side_effect=kombu.exceptions.OperationalError("Timeout reading from socket"),
    ) as delay:
        webhooks.schedule_delivery()
        webhooks.schedule_delivery()
        webhooks.schedule_delivery()
        assert delay.call_count == 1  # a hung broker costs one write its timeouts

        later = time.monotonic() + webhooks.BROKER_PAUSE_SECONDS + 1
        monkeypatch.setattr(webhooks.time, "monotonic", lambda: later)
        webhooks.schedule_delivery()
        assert delay.call_count == 2  # then it is tried again


def test_a_rollout_started_while_the_broker_is_down_is_committed_and_tries_once(
    settings, django_capture_on_commit_callbacks, caplog
) -> None:
    settings.ROLLOUT_BATCH_SIZE = 1
    for name in ("ana", "bia", "caio"):
        SubjectFactory.create(external_id=name, country="BR")
    Rollout.objects.exclude(version__label="2025-06").update(status=RolloutStatus.DRAFT)
    phase = RolloutPhase.objects.get(rollout__version__label="2025-06", position=1)
    with (
        mock.patch(
            "consent.tasks.run_rollout_batch.delay",
            side_effect=kombu.exceptions.OperationalError("Connection refused"),
        ) as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        rollouts.start_phase(phase_id=phase.pk, actor="staff:tess")

    phase.refresh_from_db()
    assert phase.status == RolloutStatus.RUNNING
    assert RolloutBatch.objects.filter(phase=phase).count() == 3
    assert delay.call_count == 1  # the first failure ends the loop
    assert "the watchdog will re-send them" in caplog.text


# --- a kept connection the server closed --------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_fast_lane_reconnects_when_the_server_closed_its_kept_connection() -> None:
    """The fast lane skips Django's per-request health check; a connection the server
    has closed (a restart, an administrator) is noticed before use, not after."""
    SubjectFactory.create(external_id="alice", country="DE")
    client = client_for("consent:read")

    def check() -> Any:
        # What each request does first in production (the test client skips it).
        connection.close_if_unusable_or_obsolete()
        return client.post(
            "/api/v1/consent-checks", {"purpose": "analytics", "subjects": ["alice"]}, format="json"
        )

    assert check().status_code == 200  # the token is cached, the connection kept
    pid = connection.connection.info.backend_pid
    # Autocommit: within one transaction pg_stat_activity is a snapshot taken at first
    # use, so a poll inside it would never see the backend leave.
    with second_connection(autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not go away"
            time.sleep(0.01)

    response = check()

    assert response.status_code == 200, response.content
    assert connection.connection.info.backend_pid != pid
