"""Helpers of the hardening tests (`test_hardening_*.py`): capturing log records,
and running Django with production settings in a child process."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import subprocess  # nosec B404 # the tests start our own interpreter, nothing else
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern

from config import logs

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# What `make checks` uses for its `check --deploy`: production, a real-looking secret.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "parley.example.com",
    "DATABASE_URL": "sqlite:///var/deploy-check.sqlite3",
    "CELERY_BROKER_URL": "memory://",
}


def production_env(**extra: str) -> dict[str, str]:
    """The environment of a production process (a fresh random SECRET_KEY)."""
    return {**PRODUCTION_ENV, "SECRET_KEY": secrets.token_urlsafe(48), **extra}


def run_django(env: dict[str, str], code: str = "", *args: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` after django.setup() (or `manage.py ARGS` when args are given) in a
    child process with exactly these settings variables (none inherited)."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k in {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR"}
    }
    command = (
        [sys.executable, "manage.py", *args]
        if args
        else [sys.executable, "-c", f"import django; django.setup(); {code}"]
    )
    return subprocess.run(  # noqa: S603  # nosec B603 # our interpreter, fixed arguments
        command,
        env={**inherited, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


_VARIANTS = """
import json, os, runpy, sys
base = dict(os.environ)
out = []
for env, names in json.loads(sys.stdin.read()):
    os.environ.clear()
    os.environ.update({**base, **env})
    try:
        values = runpy.run_path("config/settings.py")
    except Exception as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
    else:
        out.append({n: values[n] for n in names})
print(json.dumps(out, default=str))
"""


def settings_under(*envs: dict[str, str], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The settings module evaluated once per environment, all in one child process:
    per environment, these settings' values or `{"error": "..."}` if it refused."""
    inherited = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    result = subprocess.run(  # noqa: S603  # nosec B603 # our interpreter, fixed code
        [sys.executable, "-c", _VARIANTS],
        input=json.dumps([[env, list(names)] for env in envs]),
        env=inherited,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return answers


class Captured(logging.Handler):
    """Keeps every record, and the JSON line `JsonFormatter` writes for it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.stream = io.StringIO()
        self.addFilter(logs.RequestIdFilter())
        self.setFormatter(logs.JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.stream.write(self.format(record) + "\n")

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        """The per-request lines (`parley.request`)."""
        return [line for line in self.lines() if line["logger"] == "parley.request"]


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[Captured]:
    """Every record of every logger at `level` or above while the block runs: the
    root logger and every logger with a level of its own are opened to `level`."""
    handler = Captured()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    disabled = {logger: logger.disabled for logger in loggers}
    for logger in loggers:
        if logger.level > level or logger is root:
            logger.setLevel(level)
        logger.disabled = False
    # Loggers that do not pass their records up (django.server) get the handler too.
    islands = [logger for logger in loggers if not logger.propagate]
    for logger in [root, *islands]:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in [root, *islands]:
            logger.removeHandler(handler)
        for logger, old in levels.items():
            logger.setLevel(old)
            logger.disabled = disabled[logger]


# --- the URLconf ------------------------------------------------------------------------

# A value for each path converter: the middleware refuses before any lookup, so the
# values only need to resolve.
SAMPLES = {"int": "1", "str": "sample", "slug": "analytics", "path": "1", "uuid": None}
PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
# The regex patterns of the admin (its app index and catch-all), as addresses.
REGEX_SAMPLES = {
    "admin/^(?P<app_label>auth|axes|consent|ads|billing)/$": "admin/consent/",
    "admin/(?P<url>.*)$": "admin/no-such-page",
}


def url_routes() -> list[tuple[str, URLPattern]]:
    """Every URL pattern of the project with its full route, from the URLconf."""
    return list(_walk(get_resolver().url_patterns))


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def sample_address(route: str, pattern: URLPattern) -> str:
    """An address the route matches, with a sample value for each parameter."""
    if isinstance(pattern.pattern, RegexPattern):
        return "/" + REGEX_SAMPLES[route]

    def sample(match: re.Match[str]) -> str:
        value = SAMPLES[match["converter"] or "str"]
        assert value is not None, f"no sample for {match[0]} in {route}"
        return value

    return "/" + PARAMETER.sub(sample, route)
