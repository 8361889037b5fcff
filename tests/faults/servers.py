"""Private servers for the fault tests: a PostgreSQL 15 cluster, a Redis and Parley under
gunicorn, each started by the tests on ports of their own, so that stopping or
restarting them never touches the shared PostgreSQL and Redis other test runs use.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import IN_CI

BASE_DIR = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path(os.environ.get("PARLEY_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 60.0  # seconds: generous, the machine is shared


def unavailable(what: str) -> None:
    """Skips the test when a server binary is missing; under CI=true it fails."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory (no fsync: it only
    lives for the test session), listening on 127.0.0.1 on a port of its own."""

    def __init__(self, *, max_connections: int = 150) -> None:
        if not (PG_BIN / "initdb").exists():
            unavailable(f"PostgreSQL 15 ({PG_BIN}/initdb)")
        self.dir = Path(tempfile.mkdtemp(prefix="parley-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.max_connections = max_connections
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(  # noqa: S603 (fixed arguments)
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    *("-D", str(self.data), "-U", "postgres", "-A", "trust"),
                    *("-E", "UTF8", "--no-sync"),
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start()

    @property
    def options(self) -> str:
        return (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={self.max_connections}"
        )

    def url(self, dbname: str = "parley") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "parley", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, **kwargs
        )

    def _ctl(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 (fixed arguments)
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )

    def start(self) -> None:
        self._ctl("-o", self.options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown, as a restart does it: sessions are terminated, open
        transactions rolled back."""
        self._ctl("-m", "fast", "-w", "stop")

    def running(self) -> bool:
        try:
            self.connect("postgres", connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def destroy(self) -> None:
        with suppress(subprocess.SubprocessError):
            self._ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a port of its own, without persistence."""

    def __init__(self) -> None:
        if not Path(REDIS_SERVER).exists():
            unavailable("redis-server")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (fixed arguments)
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, "the private Redis")

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Down: connections are refused."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def freeze(self) -> None:
        """Hung: the port still accepts connections, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        if self.process is not None:
            self.thaw()
            self.stop()


def parley_env(*, database_url: str, broker_url: str, port: int) -> dict[str, str]:
    """Production settings (DEBUG off) on plain HTTP over loopback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    return {
        **clean,
        "DEBUG": "false",
        "SECRET_KEY": "faults-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "LOG_LEVEL": "WARNING",
    }


def manage(env: dict[str, str], *args: str) -> str:
    """Runs a management command; returns its standard output."""
    result = subprocess.run(  # noqa: S603 (our own interpreter and manage.py)
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


class Gunicorn:
    """Parley under gunicorn with threaded workers: every worker thread keeps its own
    database connection (CONN_MAX_AGE, default 60 s), as in production."""

    def __init__(self, env: dict[str, str], *, port: int, log: Path, workers: int, threads: int):
        self.port = port
        self.log = log
        self.threads = workers * threads
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (our own server command)
                [
                    str(VENV_BIN / "gunicorn"),
                    *("config.wsgi", "--bind", f"127.0.0.1:{port}"),
                    *("--workers", str(workers), "--worker-class", "gthread"),
                    *("--threads", str(threads), "--no-control-socket", "--timeout", "60"),
                    *("--graceful-timeout", "1", "--log-level", "warning"),
                ],
                cwd=BASE_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.healthy, "gunicorn")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{self.log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)  # quick shutdown
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
