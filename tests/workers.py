"""Real Celery worker processes for the tests that need one (not eager mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from kombu import pools

from config.celery import app as celery_app
from tests.conftest import IN_CI

BASE_DIR = Path(__file__).resolve().parent.parent

# The worker tests' Redis databases: run serially (or in pytest-xdist's first process),
# the rollout tests' 7 and the webhook tests' 9; every further xdist process gets a pair
# of its own, or the workers started by two processes would take each other's tasks.
_XDIST_DATABASES = {7: (10, 12, 14), 9: (11, 13, 15)}


def worker_broker_url(database: int) -> str:
    """The broker URL of the worker tests that use Redis database `database` when run
    serially, for this test process."""
    place = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if place:
        spare = _XDIST_DATABASES[database]
        if place > len(spare):
            raise RuntimeError(
                f"the worker tests have Redis databases for {len(spare) + 1} pytest-xdist "
                "processes at most (-n)"
            )
        database = spare[place - 1]
    return f"redis://127.0.0.1:6379/{database}"


def start_worker(
    *, name: str, env: dict[str, str], log_path: Path, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Starts `celery -A config worker` (prefork, two processes) in its own process
    group, logging to `log_path`, and waits until it says it is ready."""
    celery = Path(sys.executable).parent / "celery"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own worker, fixed arguments)
            [
                str(celery),
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "-n",
                f"{name}@%h",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while " ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, then SIGKILL for the whole process group (the pool's children)."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def database_params() -> dict[str, Any]:
    """Connection parameters of the test database, for a worker process to use."""
    db = connection.settings_dict
    return {
        "dbname": db["NAME"],
        "user": db["USER"] or "postgres",
        "host": db["HOST"] or "127.0.0.1",
        "port": int(db["PORT"] or 5432),
        "password": db["PASSWORD"] or None,
    }


def database_url() -> str:
    """The test database's URL, for a worker process to use."""
    db = database_params()
    auth = db["user"] + (f":{db['password']}" if db["password"] else "")
    return f"postgres://{auth}@{db['host']}:{db['port']}/{db['dbname']}"


def reset_broker_pools() -> None:
    """Producers are pooled per broker URL: drop them so the next send reconnects."""
    app: Any = celery_app  # the pools are private attributes, untyped
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def worker_broker(url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points this process's Celery app at a Redis database of its own (emptied
    before and after), so that tasks it sends reach the worker under test.

    Without Redis the test is skipped outside CI and fails under CI=true."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError:
        if IN_CI:
            raise
        pytest.skip("Redis unreachable: a real worker needs it")
    client.flushdb()
    conf: Any = celery_app.conf
    had_url = "broker_url" in conf.changes
    old_url = conf.changes.get("broker_url")
    settings.CELERY_BROKER_URL = url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads it first
    conf.broker_url = url
    reset_broker_pools()
    try:
        yield url
    finally:
        if had_url:
            conf.broker_url = old_url
        else:
            del conf.changes["broker_url"]
        reset_broker_pools()
        client.flushdb()
        client.close()
