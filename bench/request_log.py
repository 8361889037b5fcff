"""What the request-log middleware (`config/logs.py`) adds to one request.

Runs the middleware around a view that does nothing, in this process, with the
production logging set-up (JSON formatter, request-id filter, a StreamHandler that
writes and flushes every line to a file), and subtracts the same call without it.
Prints microseconds per request: with the request line, with the line turned off
(`LOG_REQUESTS=false`: the id alone), and with an incoming `X-Request-ID`.

    DEBUG=true .venv/bin/python bench/request_log.py

Not part of `make bench`; no database, no server (`make bench` measures the whole
stack under wrk, this middleware included).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.urls import resolve  # noqa: E402

from config import logs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CALLS = int(os.environ.get("BENCH_CALLS", "20000"))


def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


def per_call_us(call: Callable[[HttpRequest], HttpResponse], request: HttpRequest) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            call(request)
        rounds.append((time.perf_counter() - started) / CALLS * 1e6)
    return min(rounds)  # the least disturbed round: the machine is shared


def main() -> None:
    out = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logs.access_logger.setLevel(logging.INFO)

    factory = RequestFactory()
    plain = factory.post("/api/v1/consent-checks", REMOTE_ADDR="203.0.113.77")
    plain.resolver_match = resolve("/api/v1/consent-checks")
    plain.META[logs.ACCOUNT_KEY] = 1
    with_id = factory.post(
        "/api/v1/consent-checks",
        REMOTE_ADDR="203.0.113.77",
        HTTP_X_REQUEST_ID="5f0c2b9e-1d7a-4c38-9d1e-2b6f0a9c7e11",
    )
    with_id.resolver_match = plain.resolver_match

    middleware = logs.RequestLogMiddleware(view)
    bare = per_call_us(view, plain)
    logged = per_call_us(middleware, plain) - bare
    incoming = per_call_us(middleware, with_id) - bare
    logs.access_logger.setLevel(logging.WARNING)
    id_only = per_call_us(middleware, plain) - bare
    out.close()
    lines = len(Path(out.name).read_text().splitlines())
    Path(out.name).unlink()

    print(f"bare view call                       {bare:6.1f} µs")
    print(f"middleware, request line written     {logged:6.1f} µs")
    print(f"middleware, incoming X-Request-ID    {incoming:6.1f} µs")
    print(f"middleware, request line off         {id_only:6.1f} µs")
    print(f"({lines} JSON lines written, {ROUNDS} rounds of {CALLS} calls, best round)")


if __name__ == "__main__":
    main()
