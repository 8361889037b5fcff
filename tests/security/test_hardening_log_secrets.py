"""No secrets, tokens or full client addresses in the logs.

One test runs a broad set of flows with every logger opened to DEBUG and captures
every record; then each record's message, arguments, `extra` fields, exception and
stack text are searched for every secret the flows used (bearer tokens, webhook
secrets, passwords, sign-in link tokens, session keys) and for full IPv4/IPv6
addresses (the networks, IPv4 /24 and IPv6 /48, are allowed)."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from consent import selectors, services, tasks, webhook_tasks
from consent.models import DashboardLink, ServiceToken
from tests.dashboard.conftest import PASSWORD, with_login
from tests.factories import TEST_ACTOR, SubjectFactory, publish
from tests.security.hardening_support import captured_logs

pytestmark = pytest.mark.django_db

CLIENT_ADDRESSES = [
    "198.51.100.73",
    "203.0.113.199",
    "192.0.2.44",
    "2001:db8:abcd:12:3456:789a:bcde:f012",
    "2001:db8:feed::1",
]
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")
# The record attributes every LogRecord has; everything else came from `extra`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def texts_of(record: logging.LogRecord) -> Iterator[str]:
    """Everything of a record a handler could write."""
    yield record.getMessage()
    yield str(record.msg)
    yield repr(record.args)
    for key, value in record.__dict__.items():
        if key not in _STANDARD:
            yield f"{key}={value!r} {value}"
    if record.exc_info:
        yield logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        yield record.exc_text
    if record.stack_info:
        yield record.stack_info


def full_addresses(text: str) -> list[str]:
    """Host addresses in the text: anything but a /24 (IPv4) or /48 (IPv6) network."""
    found = []
    for candidate in _IPV4.findall(text) + _IPV6.findall(text):
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        prefix = 24 if address.version == 4 else 48
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        if address != network.network_address:
            found.append(candidate)
    return found


def leaks(records: list[logging.LogRecord], secrets: dict[str, str]) -> list[str]:
    found = []
    for record in records:
        for text in texts_of(record):
            for name, secret in secrets.items():
                if secret in text:
                    found.append(f"{record.name}: {name} in {text[:200]!r}")
            for address in full_addresses(text):
                found.append(f"{record.name}: address {address} in {text[:200]!r}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("prl_abc",), None)
    record.peer = "198.51.100.7"  # an `extra` field
    found = leaks([record], {"token": "prl_abc"})
    assert "x: token in 'to prl_abc'" in found
    assert any(f.startswith('x: address 198.51.100.7 in "peer=') for f in found)
    clean = logging.LogRecord("x", logging.INFO, __file__, 1, "from 198.51.100.0/24", None, None)
    assert leaks([clean], {"token": "prl_abc"}) == []
    assert full_addresses("198.51.100.0/24 2001:db8:1::/48 v1.2 10:30:00 ::") == []
    assert full_addresses("at 198.51.100.7 and 2001:db8:1:2::9") == [
        "198.51.100.7",
        "2001:db8:1:2::9",
    ]


# --- the flows ------------------------------------------------------------------------------


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)  # a failing receiver: the delivery logs its failure
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


@pytest.fixture
def failing_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/hooks"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _bearer(raw: str, address: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


V4, V4B, V4C, V6, V6B = CLIENT_ADDRESSES
STAFF_PASSWORD = "staff-Secret-pw-9"
WRONG = "wrong-Secret-pw-123"


def token_flows(secrets: dict[str, str]) -> str:
    """Tokens made by the service and the command (printed, never logged), then API
    calls accepted and refused, from IPv4 and IPv6 clients. Returns a good token."""
    _, app = services.create_service_token(
        name="log-app", scopes=["consent:read", "consent:write", "ads:decide"]
    )
    out = StringIO()
    call_command("create_service_token", "log-cli", "--scopes", "policy:read", stdout=out)
    printed = re.search(r"prl_[A-Za-z0-9_-]+", out.getvalue())
    assert printed is not None
    cli = printed[0]
    revoked, revoked_raw = services.create_service_token(name="log-old", scopes=["consent:read"])
    services.revoke_service_token(token=ServiceToken.objects.get(pk=revoked.pk))
    _, unscoped = services.create_service_token(name="log-weak", scopes=["billing:read"])
    unknown = "prl_" + "Q" * 43
    secrets |= {
        "app token": app,
        "command's token": cli,
        "revoked token": revoked_raw,
        "unscoped token": unscoped,
        "unknown token": unknown,
    }
    api = _bearer(app, V4)
    check = {"purpose": "analytics", "subjects": ["log-anna", "nobody"]}
    context = {"country": "DE", "language": "en"}
    decision = {"subject": "log-anna", "placement": "status", "context": context}
    choice = {"granted": True}
    answers = [
        api.get("/api/v1/subjects/log-anna").status_code,
        api.put("/api/v1/subjects/log-anna/consents/analytics", choice, format="json").status_code,
        _bearer(app, V6).post("/api/v1/consent-checks", check, format="json").status_code,
        api.post("/api/v1/ads/decisions", decision, format="json").status_code,
        _bearer(revoked_raw, V4).get("/api/v1/subjects/log-anna").status_code,
        _bearer(unknown, V6).post("/api/v1/consent-checks", check, format="json").status_code,
        _bearer(cli, V4).get("/api/v1/subjects/log-anna").status_code,
        _bearer(unscoped, V6).get("/api/v1/purposes").status_code,
        APIClient(REMOTE_ADDR=V4, HTTP_AUTHORIZATION=f"Bearer {app} x")
        .get("/api/v1/purposes")
        .status_code,
        APIClient(REMOTE_ADDR=V4, HTTP_AUTHORIZATION=f"Basic {app}")
        .get("/api/v1/purposes")
        .status_code,
        api.post(
            "/api/v1/subjects", {"external_id": "x", "country": "ZZ"}, format="json"
        ).status_code,
    ]
    assert answers == [200, 200, 200, 200, 401, 401, 403, 403, 401, 401, 400]
    return app


def webhook_flows(secrets: dict[str, str], app: str, receiver: str) -> None:
    """Subscriptions with a given and a generated secret; deliveries to a receiver
    that fails, run by the Celery task."""
    api = _bearer(app, V4)
    given = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    events = ["consent.changed"]
    created = api.post(
        "/api/v1/webhooks",
        {"name": "given", "url": receiver, "events": events, "secret": given},
        format="json",
    )
    assert created.status_code == 201, created.content
    generated = api.post(
        "/api/v1/webhooks", {"name": "generated", "url": receiver, "events": events}, format="json"
    )
    secrets |= {"given webhook secret": given, "generated secret": generated.json()["secret"]}
    changed = api.put(
        "/api/v1/subjects/log-anna/consents/analytics", {"granted": False}, format="json"
    )
    assert changed.status_code == 200
    assert webhook_tasks.deliver_webhooks.apply().get()["failed"] == 2


def link_flows(secrets: dict[str, str], app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign-in links: issued, opened, used, used again, forged, expired, sent without
    the CSRF token, and one that meets a server error."""
    api = _bearer(app, V4)
    links = []
    for i in range(4):
        response = api.post("/api/v1/subjects/log-anna/dashboard-links")
        assert response.status_code == 201
        links.append(urlsplit(response.json()["url"]).path)
        secrets[f"sign-in link {i}"] = links[-1].rsplit("/", 1)[1]
    browser = Client(REMOTE_ADDR=V4B)
    assert browser.get(links[0]).status_code == 200
    assert browser.post(links[0]).status_code == 302
    secrets["anna's session key"] = browser.cookies["sessionid"].value
    assert browser.get("/dashboard/").status_code == 200
    assert browser.post("/dashboard/choices/analytics", {"granted": "true"}).status_code == 302
    assert Client(REMOTE_ADDR=V6B).post(links[0]).status_code == 410
    assert Client(REMOTE_ADDR=V6B).get(links[0][:-2] + "xx").status_code == 404
    past = timezone.now() - timedelta(minutes=1)
    DashboardLink.objects.filter(used_at__isnull=True).update(expires_at=past)
    assert Client(REMOTE_ADDR=V4C).post(links[1]).status_code == 410
    assert Client(REMOTE_ADDR=V4C, enforce_csrf_checks=True).post(links[2]).status_code == 403

    def link_fails(**kwargs: Any) -> Any:
        raise RuntimeError("the link store is down")

    with monkeypatch.context() as patch:
        patch.setattr(selectors, "dashboard_link", link_fails)
        erring = Client(REMOTE_ADDR=V6)
        erring.raise_request_exception = False
        assert erring.get(links[3]).status_code == 500


def password_flows(secrets: dict[str, str], failure_limit: int) -> None:
    """Password sign-ins on the dashboard and the admin: good, failed, and failed
    until django-axes locks the client out."""
    secrets |= {"staff password": STAFF_PASSWORD, "wrong password": WRONG}
    signin = {"username": "log-anna", "password": PASSWORD}
    assert Client(REMOTE_ADDR=V4).post("/dashboard/signin", signin).status_code == 302
    wrong = {**signin, "password": WRONG}
    assert Client(REMOTE_ADDR=V6).post("/dashboard/signin", wrong).status_code == 400
    attacker = Client(REMOTE_ADDR=V4C)
    statuses = []
    for i in range(failure_limit + 1):
        secrets[f"guess {i}"] = guess = f"{WRONG}{i}"
        guessed = {"username": "log-bob", "password": guess}
        statuses.append(attacker.post("/dashboard/signin", guessed).status_code)
    assert statuses[-1] == 429
    admin = Client(REMOTE_ADDR=V6B)
    staff = {"username": "log-root", "password": STAFF_PASSWORD}
    assert admin.post("/admin/login/", {**staff, "password": WRONG}).status_code == 200
    assert admin.post("/admin/login/?next=/admin/", staff).status_code == 302
    secrets["staff session key"] = admin.cookies["sessionid"].value
    assert admin.get("/admin/consent/servicetoken/").status_code == 200


def error_flows(app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API call that breaks (500), and one that loses its database (503)."""

    def boom(**kwargs: Any) -> Any:
        raise RuntimeError("unexpected failure")

    def no_database(**kwargs: Any) -> Any:
        raise OperationalError("connection to server at 198.51.100.9 failed")

    failing = _bearer(app, V6)
    failing.raise_request_exception = False
    with monkeypatch.context() as patch:
        patch.setattr(selectors, "subject_consents", boom)
        assert failing.get("/api/v1/subjects/log-anna/consents").status_code == 500
        patch.setattr(selectors, "subject_consents", no_database)
        assert failing.get("/api/v1/subjects/log-anna/consents").status_code == 503


def task_flows() -> None:
    """Celery tasks: the periodic ones, and deliveries after an erasure."""
    tasks.purge_expired.apply().get()
    tasks.rollout_tick.apply().get()
    webhook_tasks.purge_webhooks.apply().get()
    services.erase_subject(external_id="log-bob", actor=TEST_ACTOR)
    webhook_tasks.deliver_webhooks.apply().get()


def test_no_flow_writes_a_secret_or_a_full_address_to_the_logs(
    failing_receiver: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    secrets: dict[str, str] = {"good password": PASSWORD}
    with captured_logs(logging.DEBUG) as logged:
        publish("2025-06")
        with_login(SubjectFactory.create(external_id="log-anna", country="DE"))
        with_login(SubjectFactory.create(external_id="log-bob", country="BR"))
        User.objects.create_superuser("log-root", password=STAFF_PASSWORD)
        app = token_flows(secrets)
        webhook_flows(secrets, app, failing_receiver)
        link_flows(secrets, app, monkeypatch)
        password_flows(secrets, settings.AXES_FAILURE_LIMIT)
        error_flows(app, monkeypatch)
        task_flows()

    records = logged.records
    by_logger = {record.name for record in records}
    # The flows did log: the scan below is not over an empty list.
    for name in [
        "parley.request",
        "django.request",
        "django.security.csrf",
        "axes.handlers.database",
        "consent.webhooks",
        "consent.problems",
        "celery.app.trace",
    ]:
        assert name in by_logger, (name, sorted(by_logger))
    assert len(records) >= 100
    assert leaks(records, secrets) == []
