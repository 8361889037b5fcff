"""Structured request logs: request ids, one JSON line per request, and the id carried
to every record of the request and to the Celery tasks it enqueues."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from kombu import Connection
from rest_framework.test import APIClient

from config import logs
from config.celery import app as celery_app
from consent import api, services
from tests.factories import SubjectFactory
from tests.security.hardening_support import (
    captured_logs,
    production_env,
    run_django,
    settings_under,
)

FRESH_ID = re.compile(r"[0-9a-f]{32}")
probe_log = logging.getLogger("tests.security.probe")


@celery_app.task(name="tests.security.request_id_probe")
def request_id_probe() -> str | None:
    """A task that logs one record and answers the request id it runs under."""
    probe_log.warning("the probe task runs")
    return logs.current_request_id()


def bearer(scopes: list[str], name: str = "log-test") -> tuple[APIClient, int]:
    token, raw = services.create_service_token(name=name, scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client, token.account_id


# --- the request id -------------------------------------------------------------------------


def test_every_response_carries_a_fresh_request_id(client: Client) -> None:
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert FRESH_ID.fullmatch(first)
    assert FRESH_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "incoming",
    ["5f0c2b9e-1d7a-4c38-9d1e-2b6f0a9c7e11", "a", "req.2026_01-a", "Z" * 64, "0abc"],
)
def test_a_plain_incoming_request_id_is_kept(client: Client, incoming: str) -> None:
    with captured_logs() as logged:
        response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] == incoming
    assert [line["request_id"] for line in logged.requests()] == [incoming]


@pytest.mark.parametrize(
    "incoming",
    [
        "",
        "Z" * 65,
        "two words",
        "line\nbreak",
        "tab\there",
        "-leading-dash",
        ".leading-dot",
        "semi;colon",
        "slash/path",
        '"quoted"',
        "{json}",
        "ünïcode",
        "id\x00nul",
        "%0d%0a",
    ],
)
def test_any_other_incoming_request_id_is_replaced(client: Client, incoming: str) -> None:
    with captured_logs() as logged:
        response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert response.status_code == 200
    assert FRESH_ID.fullmatch(response["X-Request-ID"])
    assert [line["request_id"] for line in logged.requests()] == [response["X-Request-ID"]]


# --- one line per request -------------------------------------------------------------------


@pytest.mark.django_db
def test_an_api_request_writes_one_line_with_the_route_not_the_raw_path() -> None:
    SubjectFactory.create(external_id="pseudonym-7731", country="DE")
    client, account_id = bearer(["consent:read"])
    with captured_logs() as logged:
        response = client.get("/api/v1/subjects/pseudonym-7731", REMOTE_ADDR="203.0.113.77")
    assert response.status_code == 200
    [line] = logged.requests()
    duration = line.pop("duration_ms")
    assert isinstance(duration, float | int)
    assert duration >= 0
    assert line.pop("time").endswith("+00:00")
    assert line == {
        "level": "INFO",
        "logger": "parley.request",
        "message": f"GET api/v1/subjects/<str:external_id> 200 {duration}ms",
        "request_id": response["X-Request-ID"],
        "method": "GET",
        "route": "api/v1/subjects/<str:external_id>",
        "status": 200,
        "account_id": account_id,
        "user_id": None,
        "client_ip": "203.0.113.0/24",
    }
    assert "pseudonym-7731" not in logged.stream.getvalue()


@pytest.mark.django_db
def test_a_refused_token_is_logged_without_an_account() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer prl_not-a-real-token")
    with captured_logs() as logged:
        response = client.get("/api/v1/purposes", REMOTE_ADDR="2001:db8:85a3:1:2:3:4:5")
    assert response.status_code == 401
    [line] = logged.requests()
    assert line["status"] == 401
    assert line["account_id"] is None
    assert line["client_ip"] == "2001:db8:85a3::/48"


@pytest.mark.django_db
def test_the_consent_checks_fast_lane_logs_the_tokens_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    SubjectFactory.create(external_id="alice", country="DE")
    client, account_id = bearer(["consent:read"])

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the DRF view answered instead of the fast lane")

    monkeypatch.setattr(api.ConsentChecksView, "post", not_here)
    with captured_logs() as logged:
        response = client.post(
            "/api/v1/consent-checks",
            {"purpose": "analytics", "subjects": ["alice"]},
            format="json",
        )
    assert response.status_code == 200
    [line] = logged.requests()
    assert line["route"] == "api/v1/consent-checks"
    assert line["account_id"] == account_id
    assert line["request_id"] == response["X-Request-ID"]


@pytest.mark.django_db
def test_the_ad_decisions_fast_lane_logs_the_tokens_account() -> None:
    SubjectFactory.create(external_id="alice", country="DE")
    client, account_id = bearer(["ads:decide"])
    with captured_logs() as logged:
        response = client.post(
            "/api/v1/ads/decisions",
            {
                "subject": "alice",
                "placement": "status",
                "context": {"country": "DE", "language": "en"},
            },
            format="json",
        )
    assert response.status_code == 200
    [line] = logged.requests()
    assert line["account_id"] == account_id


@pytest.mark.django_db
def test_a_staff_request_logs_the_users_id(pat: Client) -> None:
    user = User.objects.get(username="policy-pat")
    with captured_logs() as logged:
        response = pat.get("/admin/", REMOTE_ADDR="198.51.100.23")
    assert response.status_code == 200
    [line] = logged.requests()
    assert (line["route"], line["user_id"], line["account_id"]) == ("admin/", user.pk, None)
    assert line["client_ip"] == "198.51.100.0/24"


def test_an_unmatched_path_is_logged_without_it(client: Client) -> None:
    with captured_logs() as logged:
        client.get("/no/such/page/secret-looking-segment", REMOTE_ADDR="not-an-address")
    [line] = logged.requests()
    assert (line["route"], line["status"], line["client_ip"]) == (None, 404, None)
    assert "secret-looking-segment" not in json.dumps(line)


# --- the id on every record of the request --------------------------------------------------


@pytest.mark.django_db
def test_every_record_of_a_request_carries_its_id(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_view(request: Any) -> Any:
        logging.getLogger("consent.probe").warning("inside the view")
        raise RuntimeError("boom")

    monkeypatch.setattr("config.views.JsonResponse", failing_view)
    client.raise_request_exception = False
    with captured_logs() as logged:
        failed = client.get("/healthz")
        missing = client.get("/api/v1/nothing-here")
        logging.getLogger("consent.probe").warning("between requests")
    by_message = {line["message"]: line["request_id"] for line in logged.lines()}
    assert failed.status_code == 500
    assert by_message["inside the view"] == failed["X-Request-ID"]
    assert by_message["Internal Server Error: /healthz"] == failed["X-Request-ID"]
    # Django writes its 4xx line after the middleware chain has returned.
    assert by_message["Not Found: /api/v1/nothing-here"] == missing["X-Request-ID"]
    assert by_message["between requests"] is None
    assert logged.records[-1].request_id == "-"  # type: ignore[attr-defined]


def test_the_plain_format_shows_the_request_id(client: Client) -> None:
    from django.conf import settings

    logging_config: dict[str, Any] = settings.LOGGING
    formatter = logging.Formatter(logging_config["formatters"]["plain"]["format"])
    with captured_logs() as logged:
        response = client.get("/healthz", HTTP_X_REQUEST_ID="plain-1")
    [record] = [r for r in logged.records if r.name == "parley.request"]
    assert f"[{response['X-Request-ID']}] GET healthz 200" in formatter.format(record)


# --- the JSON formatter ---------------------------------------------------------------------


def test_the_json_formatter_writes_extras_and_exceptions_but_no_objects() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("the cause")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "failed %s of %d",
            ("one", 2),
            sys.exc_info(),
            extra={"count": 3, "ok": False, "request": object(), "detail": {"a": 1}},
        )
    line = json.loads(formatter.format(record))
    assert line["message"] == "failed one of 2"
    assert (line["level"], line["logger"], line["count"], line["ok"]) == ("ERROR", "x", 3, False)
    assert "request" not in line
    assert "detail" not in line
    assert "ValueError: the cause" in line["exc_info"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_production_logs_json_and_development_plain_and_nothing_else() -> None:
    code = (
        "import logging; h = logging.getLogger().handlers[0]; "
        "print(type(h.formatter).__name__, [type(f).__name__ for f in h.filters])"
    )
    production = run_django(production_env(), code)
    assert production.returncode == 0, production.stderr
    assert production.stdout.split()[0] == "JsonFormatter"
    assert "RequestIdFilter" in production.stdout

    development, forced, refused, quiet = settings_under(
        {"DEBUG": "true"},
        production_env(LOG_FORMAT="plain"),
        production_env(LOG_FORMAT="xml"),
        production_env(LOG_REQUESTS="false"),
        names=("LOG_FORMAT", "LOGGING"),
    )
    assert development["LOG_FORMAT"] == forced["LOG_FORMAT"] == "plain"
    assert development["LOGGING"]["handlers"]["console"]["formatter"] == "plain"
    assert "LOG_FORMAT must be 'json' or 'plain'" in refused["error"]
    assert quiet["LOGGING"]["loggers"]["parley.request"]["level"] == "WARNING"


@pytest.mark.parametrize(("level", "lines"), [(logging.INFO, 1), (logging.WARNING, 0)])
def test_the_request_lines_follow_the_log_level(client: Client, level: int, lines: int) -> None:
    with captured_logs() as logged:
        logging.getLogger().setLevel(level)
        client.get("/healthz")
    assert len(logged.requests()) == lines


# --- Celery ---------------------------------------------------------------------------------


def test_a_task_enqueued_during_a_request_carries_its_id_to_the_worker() -> None:
    from celery.worker.request import Request

    with Connection("memory://") as connection:
        queue = connection.SimpleQueue(f"probe-{logs.new_request_id()}")
        try:
            logs._request_id.set("req-from-the-web")
            options: dict[str, Any] = {"connection": connection, "queue": queue.queue}
            request_id_probe.apply_async(**options)
            logs._request_id.set(None)  # the request is over; the worker has its own
            message = queue.get(timeout=2)
        finally:
            logs._request_id.set(None)
        assert message.headers[logs.TASK_HEADER] == "req-from-the-web"
        with captured_logs() as logged:
            answer = Request(message, app=celery_app, task=request_id_probe).execute()
        queue.close()
    assert answer == "req-from-the-web"
    [line] = [line for line in logged.lines() if line["message"] == "the probe task runs"]
    assert line["request_id"] == "req-from-the-web"
    assert logs.current_request_id() is None


def test_a_task_run_eagerly_keeps_the_requests_id_and_gives_it_back() -> None:
    logs._request_id.set("req-eager")
    try:
        assert request_id_probe.apply().get() == "req-eager"
        assert logs.current_request_id() == "req-eager"
    finally:
        logs._request_id.set(None)


def test_a_task_enqueued_outside_a_request_carries_no_id() -> None:
    headers: dict[str, Any] = {}
    logs.carry_request_id(headers=headers)
    assert headers == {}
