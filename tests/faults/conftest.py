"""The live stack of the fault tests: Parley under gunicorn (production settings) on a
private PostgreSQL 15 cluster and a private Redis, plus a tiny HTTP client.

Started once per test session (about 8 s: initdb, migrate, gunicorn) and shared by
the live scenarios; a scenario that stops or restarts a server brings it back before
it ends. Nothing here touches the shared PostgreSQL or Redis.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.servers import (
    Gunicorn,
    PrivatePostgres,
    PrivateRedis,
    free_port,
    manage,
    parley_env,
)

PROBLEM = "application/problem+json"
SCOPES = "consent:read,consent:write,policy:read,policy:write,ads:decide"
# Parallel requests of the concurrency scenario (FAULTS_PARALLEL for a longer run); the
# server gets a thread, and so a database connection, for each.
PARALLEL = int(os.environ.get("FAULTS_PARALLEL", "50"))
WORKERS = 2
THREADS = max(25, -(-PARALLEL // WORKERS))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class Browser:
    """Cookies kept between requests, as a browser would (only what the dashboard needs)."""

    cookies: dict[str, str] = field(default_factory=dict)

    def header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def keep(self, answer: Answer, raw_cookies: list[str]) -> None:
        for raw in raw_cookies:
            name, _, rest = raw.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]


@dataclass
class LiveParley:
    server: Gunicorn
    postgres: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    token: str
    log_dir: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        browser: Browser | None = None,
        form: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Answer:
        """One request on a fresh connection; `body` is sent as JSON, `form` as a form."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if browser is not None:
            headers = {**browser.header()}
            if form is not None:
                payload = "&".join(f"{k}={v}" for k, v in form.items()).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            answer = Answer(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
            if browser is not None:
                browser.keep(answer, response.headers.get_all("Set-Cookie") or [])
            return answer
        finally:
            connection.close()

    def register(self, country: str = "BR") -> str:
        external_id = f"faults-{uuid.uuid4().hex[:12]}"
        answer = self.request(
            "POST", "/api/v1/subjects", {"external_id": external_id, "country": country}
        )
        assert answer.status == 201, answer.text
        return external_id

    def choose(self, external_id: str, purpose: str, granted: bool, **kw: Any) -> Answer:
        return self.request(
            "PUT", f"/api/v1/subjects/{external_id}/consents/{purpose}", {"granted": granted}, **kw
        )

    def check(self, external_id: str, purpose: str = "analytics", **kw: Any) -> Answer:
        return self.request(
            "POST", "/api/v1/consent-checks", {"purpose": purpose, "subjects": [external_id]}, **kw
        )

    def decide(self, external_id: str, **kw: Any) -> Answer:
        body = {
            "subject": external_id,
            "placement": "status",
            "context": {"country": "BR", "language": "pt-BR"},
        }
        return self.request("POST", "/api/v1/ads/decisions", body, **kw)

    def sign_in(self, external_id: str) -> Browser:
        """A dashboard session through a single-use link (GET shows a form, POST signs in)."""
        link = self.request("POST", f"/api/v1/subjects/{external_id}/dashboard-links")
        assert link.status == 201, link.text
        path = "/" + link.json()["url"].split("/", 3)[3]
        browser = Browser()
        page = self.request("GET", path, browser=browser)
        assert page.status == 200, page.text
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert match is not None
        signed_in = self.request(
            "POST", path, browser=browser, form={"csrfmiddlewaretoken": match.group(1)}
        )
        assert signed_in.status == 302, signed_in.text
        assert self.request("GET", "/dashboard/", browser=browser).status == 200
        return browser

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.postgres.connect(autocommit=True) as connection:
            return connection.execute(query, params).fetchall()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres(max_connections=WORKERS * THREADS + 50)
    try:
        with cluster.connect("postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE parley")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def parley(
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveParley]:
    log_dir = tmp_path_factory.mktemp("faults-live")
    port = free_port()
    env = parley_env(database_url=private_postgres.url(), broker_url=private_redis.url, port=port)
    manage(env, "migrate", "--noinput", "-v", "0")
    token = manage(env, "create_service_token", "faults-tests", "--scopes", SCOPES).strip()
    server = Gunicorn(
        env, port=port, log=log_dir / "gunicorn.log", workers=WORKERS, threads=THREADS
    )
    try:
        yield LiveParley(server, private_postgres, private_redis, env, token, log_dir)
    finally:
        server.stop()


@pytest.fixture
def live(parley: LiveParley) -> Iterator[LiveParley]:
    """The live stack, with both servers up again after the test whatever happened."""
    yield parley
    if not parley.postgres.running():
        parley.postgres.start()
    if parley.redis.process is None:
        parley.redis.start()


# --- the consistency of consent in the database ------------------------------------------

# Every (subject, purpose) with events has a current state, pointing at its latest event
# and saying what that event says; every state points at an event of its own subject
# and purpose. A change cut off halfway (an event without its state, or the reverse)
# shows up here.
HALF_WRITTEN_SQL = """
WITH latest AS (
  SELECT DISTINCT ON (subject_id, purpose_id) id, subject_id, purpose_id, granted, source
  FROM consent_consentevent
  ORDER BY subject_id, purpose_id, id DESC
)
SELECT 'event without its state' AS problem, l.subject_id, l.purpose_id
FROM latest l
LEFT JOIN consent_consentstate s ON s.subject_id = l.subject_id AND s.purpose_id = l.purpose_id
WHERE s.id IS NULL OR s.event_id <> l.id OR s.granted <> l.granted OR s.source <> l.source
UNION ALL
SELECT 'state without its event', s.subject_id, s.purpose_id
FROM consent_consentstate s
LEFT JOIN consent_consentevent e
  ON e.id = s.event_id AND e.subject_id = s.subject_id AND e.purpose_id = s.purpose_id
WHERE e.id IS NULL
"""
