"""The API's rate limit per service token (`consent/ratelimit.py`).

A fixed one-minute window per token, counted in Redis through leases: each process
takes a block of the window's allowance in one atomic call and counts locally. The
tests pin what the documentation promises: never more than the limit per window
(parallel processes and threads), the bound on under-admission, one Redis round trip
per block rather than per request, 429 problem+json with Retry-After from the DRF
views and from the fast lanes alike, each request counted once, and consent reads
and writes carrying on when Redis is gone (fail open, circuit breaker, short
timeouts).

Limiter tests use a clock of their own, so a window boundary never falls inside a
test; HTTP tests use a real window and limits far from its edge.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from consent import fastlane, ratelimit, services
from consent.choices import Scope
from consent.models import ServiceToken
from tests.conftest import IN_CI
from tests.factories import SubjectFactory, publish
from tests.security.limiter_worker import hammer

PROBLEM = "application/problem+json"
NOW = 1_800_000_000.0 + 17.25  # 17.25 s into a window: 42.75 s left, Retry-After 43
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def redis_url() -> str:
    url = django_settings.API_RATE_LIMIT_REDIS_URL
    try:
        if not url:
            raise redis.ConnectionError("no Redis URL")
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError:
        if IN_CI:
            raise
        pytest.skip("Redis unreachable: the rate limit needs it")
    return url


@pytest.fixture
def url() -> str:
    return redis_url()


@pytest.fixture
def key() -> str:
    """A key no other test (or earlier run) has counted under."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _fresh_limiter() -> Iterator[None]:
    ratelimit.reset()
    yield
    ratelimit.reset()


class CountingClient:
    """A Redis client that counts the lease scripts it runs."""

    def __init__(self, url: str) -> None:
        self.client = ratelimit.redis_client(url)
        self.calls = 0

    def register_script(self, script: str) -> Any:
        inner = self.client.register_script(script)

        def run(**kwargs: Any) -> Any:
            self.calls += 1
            return inner(**kwargs)

        return run


def counted(url: str, **kwargs: Any) -> tuple[ratelimit.Limiter, CountingClient]:
    client = CountingClient(url)
    return ratelimit.Limiter(lambda: client, clock=lambda: NOW, **kwargs), client


def admitted(limiter: ratelimit.Limiter, key: str, limit: int, attempts: int) -> int:
    return sum(limiter.admit(key, limit).allowed for _ in range(attempts))


# --- the limiter ---------------------------------------------------------------------------


def test_a_window_admits_exactly_the_limit_then_says_when_to_retry(url: str, key: str) -> None:
    limiter, _ = counted(url)

    assert admitted(limiter, key, 250, 250) == 250
    refused = limiter.admit(key, 250)

    assert not refused.allowed
    assert refused.retry_after == 43  # seconds until the window ends, rounded up
    assert refused.limit == 250


def test_the_next_window_admits_again(url: str, key: str) -> None:
    now = [NOW]
    limiter = ratelimit.Limiter(lambda: ratelimit.redis_client(url), clock=lambda: now[0])
    assert admitted(limiter, key, 5, 6) == 5

    now[0] += 42.75  # the first moment of the next window

    assert admitted(limiter, key, 5, 6) == 5


def test_redis_is_asked_once_per_block_not_once_per_request(url: str, key: str) -> None:
    limiter, client = counted(url)
    limit = 100_000  # blocks of 1,000

    assert admitted(limiter, key, limit, 5_000) == 5_000

    assert ratelimit.block_size(limit) == 1_000
    assert client.calls == 5


def test_a_spent_window_is_refused_without_asking_redis_again(url: str, key: str) -> None:
    limiter, client = counted(url)
    assert admitted(limiter, key, 10, 10) == 10
    calls = client.calls

    assert admitted(limiter, key, 10, 500) == 0

    assert client.calls == calls + 1  # the one that found the window spent


@pytest.mark.parametrize(
    ("limit", "block"), [(1, 1), (99, 1), (250, 2), (12_000, 120), (100_000, 1_000), (10**9, 1_000)]
)
def test_a_block_is_one_percent_of_the_limit_at_most_a_thousand(limit: int, block: int) -> None:
    assert ratelimit.block_size(limit) == block


def test_processes_and_threads_together_never_exceed_the_limit(url: str, key: str) -> None:
    """Three processes with four threads each, all on one token: 120,000 attempts for a
    limit of 100,000 (blocks of 1,000). Every process keeps asking until it is refused,
    so none holds an unused block at the end and exactly the limit is admitted."""
    limit, processes, threads, attempts = 100_000, 3, 4, 10_000
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        ready = manager.Barrier(processes)
        counts = pool.starmap(
            hammer, [(url, key, limit, NOW, threads, attempts, ready)] * processes, chunksize=1
        )

    assert sum(counts) == limit, counts
    assert len([count for count in counts if count]) >= 2, counts  # side by side
    window = int(NOW // ratelimit.WINDOW_SECONDS)
    stored = redis.Redis.from_url(url).get(f"{ratelimit.KEY_PREFIX}{key}:{window}")
    assert stored is not None
    assert int(stored) == limit


def test_under_admission_is_at_most_one_block_per_other_process(url: str, key: str) -> None:
    """Process A leases a block and goes quiet; B uses the rest and is refused while
    A's block is unused: B is short of at most that block, and A can still use it."""
    limit = 1_000
    block = ratelimit.block_size(limit)
    a, _ = counted(url)
    b, _ = counted(url)
    assert a.admit(key, limit).allowed  # A holds block - 1 unused

    admitted_by_b = admitted(b, key, limit, 2 * limit)

    assert admitted_by_b == limit - block
    assert admitted(a, key, limit, 2 * limit) == block - 1
    assert 1 + admitted_by_b + block - 1 == limit


def test_a_lower_limit_takes_effect_in_the_same_window(url: str, key: str) -> None:
    limiter, _ = counted(url)
    assert admitted(limiter, key, 1_000, 30) == 30  # one block of 10, leased three times

    assert admitted(limiter, key, 20, 10) == 0


# --- Redis unreachable: fail open, breaker, timeouts -------------------------------------------


class FailingFactory:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        raise redis.ConnectionError("refused")


def test_without_redis_every_request_is_admitted_with_one_warning(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory = FailingFactory()
    limiter = ratelimit.Limiter(factory, clock=lambda: NOW, monotonic=lambda: 100.0)

    with caplog.at_level(logging.WARNING, logger="consent.ratelimit"):
        assert admitted(limiter, key, 3, 50) == 50

    assert factory.calls == 1  # the breaker kept the other 49 away from Redis
    [record] = caplog.records
    assert "Redis unreachable" in record.getMessage()


def test_the_breaker_tries_redis_again_after_its_pause(url: str, key: str) -> None:
    monotonic = [100.0]
    healthy = [False]

    def factory() -> Any:
        if not healthy[0]:
            raise redis.ConnectionError("refused")
        return ratelimit.redis_client(url)

    limiter = ratelimit.Limiter(factory, clock=lambda: NOW, monotonic=lambda: monotonic[0])
    assert admitted(limiter, key, 3, 10) == 10  # open: no limit
    healthy[0] = True
    monotonic[0] += ratelimit.BREAKER_SECONDS - 0.1
    assert admitted(limiter, key, 3, 10) == 10  # still open

    monotonic[0] += 0.2

    assert admitted(limiter, key, 3, 10) == 3  # closed again: the limit holds


def test_a_redis_that_never_answers_times_out_and_fails_open(key: str) -> None:
    """A server that accepts connections and never replies: the 50 ms socket timeout
    ends the wait, the request is admitted and the breaker opens."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        limiter = ratelimit.Limiter(
            lambda: ratelimit.redis_client(f"redis://127.0.0.1:{port}/0"), clock=lambda: NOW
        )

        assert limiter.admit(key, 1).allowed
        assert limiter.admit(key, 1).allowed

        assert limiter._open_until > 0


def test_the_client_fails_fast_without_retries() -> None:
    client = ratelimit.redis_client("redis://127.0.0.1:6379/0")
    kwargs = client.connection_pool.connection_kwargs

    assert kwargs["socket_timeout"] <= 0.05
    assert kwargs["socket_connect_timeout"] <= 0.05
    assert kwargs["retry"].get_retries() == 0


def test_the_redis_url_defaults_to_the_brokers_redis() -> None:
    broker = django_settings.CELERY_BROKER_URL
    expected = broker if broker.startswith(("redis://", "rediss://")) else ""
    assert expected == django_settings.API_RATE_LIMIT_REDIS_URL


# --- over HTTP: the DRF views and the fast lanes --------------------------------------------------


def client_with(limit: int | None, *scopes: str, name: str = "limited") -> tuple[APIClient, str]:
    _, raw = services.create_service_token(
        name=name, scopes=scopes or Scope.values, rate_limit_per_minute=limit
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client, raw


def assert_throttled(response: Any, limit: int) -> dict[str, Any]:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == PROBLEM
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= ratelimit.WINDOW_SECONDS
    body = response.json()
    assert body["type"] == "urn:parley:problem:rate-limited"
    assert body["status"] == 429
    assert f"{limit} requests a minute" in body["detail"]
    return body


CHECK = {"purpose": "analytics", "subjects": ["alice", "nobody"]}
DECISION = {
    "subject": "alice",
    "placement": "status",
    "context": {"country": "DE", "language": "de"},
}


@pytest.mark.django_db
def test_a_drf_endpoint_refuses_the_request_after_the_limit(url: str) -> None:
    SubjectFactory.create(external_id="alice")
    client, _ = client_with(3, Scope.CONSENT_READ)

    for _ in range(3):
        assert client.get("/api/v1/subjects/alice").status_code == 200

    assert_throttled(client.get("/api/v1/subjects/alice"), 3)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "scope"),
    [
        ("/api/v1/consent-checks", CHECK, Scope.CONSENT_READ),
        ("/api/v1/ads/decisions", DECISION, Scope.ADS_DECIDE),
    ],
)
def test_a_fast_lane_refuses_like_the_drf_view(
    url: str, fast_lane_answers: list[str], monkeypatch: pytest.MonkeyPatch, path, body, scope
) -> None:
    SubjectFactory.create(external_id="alice")
    client, _ = client_with(2, scope)
    for _ in range(2):
        assert client.post(path, body, format="json").status_code == 200
    assert fast_lane_answers == [path, path]

    from_lane = client.post(path, body, format="json")
    assert fast_lane_answers == [path, path, path]  # the lane itself refused

    # The same refusal from the DRF view behind the lane (lanes off):
    monkeypatch.setattr(fastlane, "consent_check", lambda request: None)
    from ads import fastlane as ads_fastlane

    monkeypatch.setattr(ads_fastlane, "decide", lambda request: None)
    from_view = client.post(path, body, format="json")

    assert assert_throttled(from_lane, 2) == assert_throttled(from_view, 2)
    assert from_lane.content == from_view.content
    assert abs(int(from_lane["Retry-After"]) - int(from_view["Retry-After"])) <= 1


@pytest.mark.django_db
def test_a_request_the_fast_lane_passes_on_is_counted_once(
    url: str, fast_lane_answers: list[str]
) -> None:
    """Untrimmed ids are not for the lane: it counts the request, then the DRF view
    answers it without counting it again."""
    client, _ = client_with(4, Scope.CONSENT_READ)
    body = {"purpose": "analytics", "subjects": [" alice "]}

    for _ in range(4):
        assert client.post("/api/v1/consent-checks", body, format="json").status_code == 200
    assert fast_lane_answers == []

    assert_throttled(client.post("/api/v1/consent-checks", body, format="json"), 4)


@pytest.mark.django_db
def test_the_limit_is_per_token_across_every_endpoint(url: str) -> None:
    SubjectFactory.create(external_id="alice")
    client, _ = client_with(3)
    assert client.get("/api/v1/subjects/alice").status_code == 200
    assert client.post("/api/v1/consent-checks", CHECK, format="json").status_code == 200
    assert client.get("/api/v1/purposes").status_code == 200

    assert_throttled(client.get("/api/v1/rollouts"), 3)
    assert_throttled(client.post("/api/v1/consent-checks", CHECK, format="json"), 3)
    # Another token of the same service account has its own allowance.
    other, _ = client_with(3, name="limited")
    assert other.get("/api/v1/purposes").status_code == 200


@pytest.mark.django_db
def test_refused_requests_are_not_counted(url: str) -> None:
    """401 and 403 come before the limit: a token without the scope cannot use up
    its own allowance (and a request without a valid token has none)."""
    client, _ = client_with(2, Scope.POLICY_READ)
    for _ in range(5):
        assert client.get("/api/v1/subjects/alice").status_code == 403
        assert client.post("/api/v1/consent-checks", CHECK, format="json").status_code == 403

    assert client.get("/api/v1/purposes").status_code == 200
    assert client.get("/api/v1/purposes").status_code == 200
    assert_throttled(client.get("/api/v1/purposes"), 2)


@pytest.mark.django_db
def test_a_token_without_its_own_limit_gets_the_default(url: str, settings: Any) -> None:
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    client, _ = client_with(None, Scope.POLICY_READ)

    assert client.get("/api/v1/purposes").status_code == 200
    assert client.get("/api/v1/purposes").status_code == 200
    assert_throttled(client.get("/api/v1/purposes"), 2)


@pytest.mark.django_db
def test_consent_reads_and_writes_carry_on_without_redis(
    settings: Any, fast_lane_answers: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings.API_RATE_LIMIT_REDIS_URL = UNREACHABLE
    ratelimit.reset()
    SubjectFactory.create(external_id="alice")
    publish("2025-06", "DE")
    client, _ = client_with(1)

    with caplog.at_level(logging.WARNING, logger="consent.ratelimit"):
        put = client.put(
            "/api/v1/subjects/alice/consents/analytics", {"granted": True}, format="json"
        )
        check = client.post("/api/v1/consent-checks", CHECK, format="json")
        decision = client.post("/api/v1/ads/decisions", DECISION, format="json")
        read = client.get("/api/v1/subjects/alice/consents")

    assert [r.status_code for r in (put, check, decision, read)] == [200, 200, 200, 200]
    assert check.json()["results"][0] == {"subject": "alice", "allowed": True, "reason": None}
    assert fast_lane_answers == ["/api/v1/consent-checks", "/api/v1/ads/decisions"]
    assert len([r for r in caplog.records if "Redis unreachable" in r.getMessage()]) == 1


# --- the token's limit: command, admin, benchmark -----------------------------------------------


@pytest.mark.django_db
def test_create_service_token_sets_the_limit_and_refuses_a_bad_one(capsys: Any) -> None:
    call_command("create_service_token", "crm", "--scopes", "consent:read", "--rate-limit", "90")
    raw = capsys.readouterr().out.strip()
    token = ServiceToken.objects.get(prefix=raw[:12])
    assert token.rate_limit_per_minute == 90
    assert ratelimit.limit_of(token) == 90

    from django.core.management.base import CommandError

    for bad in ("0", "-5"):
        with pytest.raises(CommandError):
            call_command(
                "create_service_token", "crm", "--scopes", "consent:read", "--rate-limit", bad
            )


@pytest.mark.django_db
def test_staff_see_the_limit_and_change_only_the_limit_in_the_admin(admin_user: Any) -> None:
    token, _ = services.create_service_token(name="crm", scopes=["consent:read"])
    admin = Client()
    admin.force_login(admin_user)

    listing = admin.get("/admin/consent/servicetoken/").content.decode()
    assert f"default ({django_settings.API_RATE_LIMIT_PER_MINUTE})" in listing
    page = f"/admin/consent/servicetoken/{token.pk}/change/"
    form = admin.get(page).context["adminform"].form
    assert list(form.fields) == ["rate_limit_per_minute"]

    response = admin.post(page, {"rate_limit_per_minute": "600", "scopes": '["policy:write"]'})

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.rate_limit_per_minute == 600
    assert token.scopes == ["consent:read"]
    assert "600" in admin.get("/admin/consent/servicetoken/").content.decode()


def test_the_benchmark_token_is_never_throttled() -> None:
    """bench/http_api.py issues its load token with a limit far above the load (1,600
    checks a second for a minute is 96,000)."""
    source = (Path(django_settings.BASE_DIR) / "bench" / "http_api.py").read_text()
    tree = ast.parse(source)
    [limit] = [
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "BENCH_RATE_LIMIT" for t in node.targets)
    ]
    assert 1_000 * 96_000 <= limit < 2**31  # and within the field's range
    assert '"--rate-limit",\n            str(BENCH_RATE_LIMIT),' in source
