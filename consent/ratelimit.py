"""The API's rate limit per service token: a fixed one-minute window counted in Redis,
without a Redis round trip per request.

Each token may make `rate_limit_per_minute` requests (its own field, or
`API_RATE_LIMIT_PER_MINUTE`) in each window of the wall clock (`floor(time / 60)`).
The window's counter lives in Redis; a web process does not ask Redis for every
request but *leases* a block of the allowance — one atomic Lua call that grants
`min(block, limit - used)` and adds it to the counter — and admits requests from
its block locally until it is used up. Redis never grants more than the limit, and a
process admits only what it was granted, so the requests admitted per token and
window never exceed the limit, however many processes and threads there are.

What a lease costs is under-admission: when one process is refused (the counter has
reached the limit), each other process may still hold an unused part of its last
block, at most `block` requests. So at least `limit - (processes - 1) * block`
requests are admitted in a window before the first refusal, with
`block = clamp(limit // LEASE_DIVISOR, 1, LEASE_MAX)` (1% of the limit, at most 1,000).

Redis unreachable must not stop consent reads and writes: the limiter then admits
every request (fails open), logs a warning, and does not try Redis again for
`BREAKER_SECONDS` (a circuit breaker); its socket timeouts are 50 ms.

The API's two paths share one `Limiter`: DRF views through `TokenRateThrottle`, and
the fast lanes (`consent/fastlane.py`, `ads/fastlane.py`) through `fast_lane_refusal`,
which marks the request so that a request the lane passes on to the DRF view is not
counted twice.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
LEASE_DIVISOR = 100  # a block is 1% of the limit...
LEASE_MAX = 1000  # ...and at most this many requests
BREAKER_SECONDS = 5.0
SOCKET_TIMEOUT_SECONDS = 0.05
KEY_PREFIX = "parley:ratelimit:"
_LEASES_MAX = 10_000
KEY_HASH_CHARS = 20  # of the token's SHA-256: the key in Redis and in the leases
# Set on the Django request once the limiter has counted it (the fast lanes).
COUNTED = "parley_rate_counted"

# Grants min(block, limit - used) of the window's allowance and counts it, atomically.
LEASE_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant <= 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return grant
"""


def block_size(limit: int) -> int:
    """How much of a window's allowance one lease asks for."""
    return max(1, min(LEASE_MAX, limit // LEASE_DIVISOR))


@dataclass
class _Lease:
    window: int
    remaining: int = 0
    exhausted: bool = False  # Redis granted nothing more in this window


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    retry_after: int = 0  # seconds until the next window, when refused


class Limiter:
    """Admits or refuses requests per key (a token) and limit, leasing from Redis."""

    def __init__(
        self,
        client_factory: Callable[[], Any] | None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        breaker_seconds: float = BREAKER_SECONDS,
    ) -> None:
        self._client_factory = client_factory
        self._clock = clock
        self._monotonic = monotonic
        self._breaker_seconds = breaker_seconds
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}
        self._client: Any = None
        self._script: Any = None
        self._open_until = 0.0  # the breaker: no Redis call before this moment

    def admit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.window != window:
                if len(self._leases) >= _LEASES_MAX:
                    self._leases.clear()
                lease = self._leases[key] = _Lease(window)
            if lease.remaining > 0:
                lease.remaining -= 1
                return Decision(True, limit)
            if not lease.exhausted:
                granted = self._lease(key, window, limit)
                if granted is None:  # Redis unreachable: fail open
                    return Decision(True, limit)
                if granted > 0:
                    lease.remaining = granted - 1
                    return Decision(True, limit)
                lease.exhausted = True
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        return Decision(False, limit, retry_after)

    def _lease(self, key: str, window: int, limit: int) -> int | None:
        """The block Redis grants (0 when the window's allowance is spent), or None
        when Redis cannot be reached."""
        factory = self._client_factory
        if factory is None or self._monotonic() < self._open_until:
            return None
        import redis

        try:
            if self._script is None:
                self._client = factory()
                self._script = self._client.register_script(LEASE_SCRIPT)
            granted = self._script(
                keys=[f"{KEY_PREFIX}{key}:{window}"],
                args=[limit, block_size(limit), 2 * WINDOW_SECONDS],
            )
        except redis.RedisError as exc:
            self._open_until = self._monotonic() + self._breaker_seconds
            logger.warning(
                "API rate limit: Redis unreachable (%s); admitting requests without a "
                "limit for %.0f s",
                type(exc).__name__,
                self._breaker_seconds,
            )
            return None
        return int(granted)

    def reset(self) -> None:
        """Forgets the local leases and the breaker (tests)."""
        with self._lock:
            self._leases.clear()
            self._open_until = 0.0


def redis_client(url: str) -> Any:
    """A client that fails fast: short socket timeouts and no retries."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


_limiter: Limiter | None = None
_limiter_lock = threading.Lock()


def limiter() -> Limiter:
    """This process's limiter, on `API_RATE_LIMIT_REDIS_URL` (none: no limit)."""
    global _limiter
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                url = settings.API_RATE_LIMIT_REDIS_URL
                _limiter = Limiter((lambda: redis_client(url)) if url else None)
    return _limiter


def reset() -> None:
    """Drops this process's limiter (tests; a changed Redis URL takes effect)."""
    global _limiter
    with _limiter_lock:
        _limiter = None


def limit_of(token: Any) -> int:
    """The token's own limit, else the default."""
    own = token.rate_limit_per_minute
    return int(settings.API_RATE_LIMIT_PER_MINUTE if own is None else own)


def admit_token(token: Any) -> Decision:
    return limiter().admit(token.token_hash[:KEY_HASH_CHARS], limit_of(token))


def refusal_detail(decision: Decision) -> str:
    return (
        f"This token may make {decision.limit} requests a minute; "
        f"retry in {decision.retry_after} s."
    )


class TokenRateThrottle(BaseThrottle):
    """DRF's side: every authenticated API request is counted once."""

    def allow_request(self, request: Request, view: Any) -> bool:
        from consent.auth import ServicePrincipal

        principal = request.user
        if not isinstance(principal, ServicePrincipal):
            return True
        if getattr(request._request, COUNTED, False):
            return True  # a fast lane counted it before passing it on
        decision = admit_token(principal.token)
        if not decision.allowed:
            refused = exceptions.Throttled(wait=decision.retry_after)
            refused.detail = refusal_detail(decision)  # the fast lanes' words, exactly
            raise refused
        return True


def fast_lane_refusal(request: HttpRequest, token: Any) -> HttpResponse | None:
    """Counts a fast-lane request; the 429 problem DRF would give when refused."""
    decision = admit_token(token)
    setattr(request, COUNTED, True)
    if decision.allowed:
        return None
    # Imported here: consent.problems imports DRF's views, which load this module's
    # throttle from the settings.
    from consent.problems import PROBLEM_CONTENT_TYPE, problem_body

    body = problem_body(
        status_code=429,
        code="rate-limited",
        title="Too many requests",
        detail=refusal_detail(decision),
        instance=request.path,
    )
    # Rendered as DRF's JSON renderer would.
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    response = HttpResponse(content, status=429, content_type=PROBLEM_CONTENT_TYPE)
    response["Retry-After"] = str(decision.retry_after)
    return response
