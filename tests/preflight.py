"""Decides which PostgreSQL and broker the test suite uses; prints shell exports.

`make test` runs `eval "$(python -m tests.preflight)"` before pytest. Under CI=true
a server that cannot be reached fails the run; elsewhere the suite falls back to
SQLite and an in-memory broker, loudly.
"""

from __future__ import annotations

import os
import shlex
import sys

import psycopg
import redis

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/parley"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


def _loud(message: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr)


def main() -> int:
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    broker_url = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    exports = {"DEBUG": "true"}

    try:
        # The maintenance database: pytest-django creates test_<name> through it.
        maintenance = database_url.rsplit("/", 1)[0] + "/postgres"
        psycopg.connect(maintenance, connect_timeout=3).close()
        exports["DATABASE_URL"] = database_url
    except psycopg.Error as exc:
        if in_ci:
            print(f"PostgreSQL unreachable at {database_url}: {exc}", file=sys.stderr)
            return 1
        _loud(
            f"PostgreSQL is unreachable ({exc.__class__.__name__}).\n"
            "FALLING BACK TO SQLITE: tests that need PostgreSQL (the append-only trigger,\n"
            "concurrency) are SKIPPED. Start PostgreSQL for a real run."
        )
        exports["DATABASE_URL"] = "sqlite:///var/test.sqlite3"

    try:
        redis.Redis.from_url(broker_url, socket_connect_timeout=3).ping()
        exports["CELERY_BROKER_URL"] = broker_url
    except redis.RedisError as exc:
        if in_ci:
            print(f"Redis unreachable at {broker_url}: {exc}", file=sys.stderr)
            return 1
        _loud(
            f"Redis is unreachable ({exc.__class__.__name__}).\n"
            "FALLING BACK TO AN IN-MEMORY BROKER: the broker round-trip test is SKIPPED."
        )
        exports["CELERY_BROKER_URL"] = "memory://"

    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
