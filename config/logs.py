"""Structured logs: a request id on every record, and one line per request.

`RequestLogMiddleware` comes first in the middleware chain. It takes the caller's
`X-Request-ID` when it is a plain token (letters, digits, `.`, `_`, `-`; at most 64
characters) and makes one otherwise, returns it in the response's `X-Request-ID`,
and holds it in a context variable for the request's duration: `RequestIdFilter`
puts it on every log record, and Celery tasks enqueued meanwhile carry it in a
message header (`parley_request_id`) to the worker, whose records show it too.

When the response is ready it writes one record to the `parley.request` logger: the
method, the matched route pattern (`api/v1/subjects/<str:external_id>`, never the
raw path, which can hold ids and the token of a sign-in link), the status, the
duration in milliseconds, the service account of the bearer token or the signed-in
user's id, and the client's network (IPv4 /24, IPv6 /48), never its full address.

`JsonFormatter` writes any record as one JSON object per line (`LOG_FORMAT=json`,
the production default); `LOG_FORMAT=plain` keeps a readable line with the request
id in brackets.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# What an incoming id may be: short, and nothing that could break a log line or a
# header. Anything else is replaced by a fresh id (never an error).
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The Celery message header that carries the id to the worker.
TASK_HEADER = "parley_request_id"
# Where the API's authentication notes the calling service account (a WSGI environ
# key, namespaced as WSGI asks, so it costs a dict write and needs no attribute).
ACCOUNT_KEY = "parley.account_id"
# django.contrib.auth keeps the signed-in user's id in the session under this key.
_SESSION_USER_KEY = "_auth_user_id"

_request_id: ContextVar[str | None] = ContextVar("parley_request_id", default=None)
access_logger = logging.getLogger("parley.request")


def current_request_id() -> str | None:
    """The id of the request (or task) being handled in this context, if any."""
    return _request_id.get()


def new_request_id() -> str:
    """128 random bits as 32 hex digits."""
    return os.urandom(16).hex()


def note_account(request: Any, account_id: int) -> None:
    """Records the service account a bearer token belongs to, for the request's log
    line (`request` is Django's request or DRF's, which passes META through)."""
    request.META[ACCOUNT_KEY] = account_id


@functools.lru_cache(maxsize=4096)
def truncate_ip(raw: str) -> str | None:
    """The client's network, never its host: IPv4 to /24, IPv6 to /48 (cached: the
    same few addresses, proxies and load balancers, come again and again)."""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _user_id(request: HttpRequest) -> int | None:
    """The signed-in user's id if the request's session was read anyway (the admin,
    the dashboard); reading it here would cost a query on requests that never did."""
    session = request.__dict__.get("session")
    cache = getattr(session, "_session_cache", None) if session is not None else None
    if not cache:
        return None
    value = cache.get(_SESSION_USER_KEY)
    return int(value) if isinstance(value, str) and value.isdigit() else None


class RequestLogMiddleware:
    """First in the chain: the request id, then one log line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.META.get("HTTP_X_REQUEST_ID")
        if incoming and REQUEST_ID_PATTERN.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = new_request_id()
        # Kept until the response is closed (`request_finished`), so the lines Django
        # writes for a 4xx after the middleware chain carry the id too.
        _request_id.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        if access_logger.isEnabledFor(logging.INFO):
            _log_request(request, response, started, request_id)
        return response


def _forget_request_id(**kwargs: Any) -> None:
    _request_id.set(None)


request_finished.connect(_forget_request_id, dispatch_uid="parley-forget-request-id")


def _log_request(
    request: HttpRequest, response: HttpResponse, started: float, request_id: str
) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    match = request.resolver_match
    route = match.route if match is not None else None
    meta = request.META
    account_id = meta.get(ACCOUNT_KEY)
    user_id = None if account_id is not None else _user_id(request)
    remote = meta.get("REMOTE_ADDR")
    # The record is made and handled directly: the caller lookup `info()` would do
    # (a walk up the stack) tells nothing here and is a tenth of the line's cost.
    record = access_logger.makeRecord(
        access_logger.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %s %sms",
        (request.method, route or "-", response.status_code, duration_ms),
        None,
        extra={
            "request_id": request_id,
            "method": request.method,
            "route": route,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "account_id": account_id,
            "user_id": user_id,
            "client_ip": truncate_ip(remote) if remote else None,
        },
    )
    access_logger.handle(record)


# --- logging ---------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record a handler writes (`-` outside a
    request or task), unless the record already carries one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get() or "-"
        return True


# Secrets that can reach a log line through a request's path: the token of a
# dashboard sign-in link (Django logs the path of every 4xx/5xx and CSRF failure),
# and a bearer token or webhook secret someone pasted into a URL.
_SECRETS = (
    (re.compile(r"(/dashboard/login/)[^/\s'\"?#]+"), r"\1[redacted]"),
    (re.compile(r"(prl_)[A-Za-z0-9_-]+"), r"\1[redacted]"),
    (re.compile(r"(whsec_)[A-Za-z0-9+/=]+"), r"\1[redacted]"),
)


def redact(text: str) -> str:
    """The text with sign-in link tokens, bearer tokens and webhook secrets masked."""
    if "/dashboard/login/" in text or "prl_" in text or "whsec_" in text:
        for pattern, replacement in _SECRETS:
            text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """On Django's request loggers (`django.request`, `django.security.csrf`): masks
    secrets in the message and its arguments, and drops the request object Django
    attaches (its text is the raw path; nothing Parley configures reads it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.__dict__.pop("request", None)
        return True


# Every attribute a plain LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}
_JSON_SCALARS = (str, int, float, bool, type(None))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, request
    id, the record's `extra` fields, and the formatted exception if any.

    Only plain values of `extra` are written: objects such as the request that
    Django attaches to its error records are left out, since their text (a path, a
    header) is exactly what must not reach the logs."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = record.__dict__.get("request_id")
        entry: dict[str, Any] = {
            "time": _utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id if request_id not in (None, "-") else _request_id.get(),
        }
        fields = record.__dict__
        for key in fields.keys() - _RECORD_ATTRIBUTES:
            value = fields[key]
            if isinstance(value, _JSON_SCALARS):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


_last_second: tuple[int, str] = (-1, "")


def _utc_time(created: float) -> str:
    """ISO 8601 in UTC with milliseconds; the part up to the second is reused while
    the second lasts (a third of the cost of formatting a datetime each time)."""
    global _last_second
    second = int(created)
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_last_second[1]}.{int((created - second) * 1000):03d}+00:00"


# --- Celery ----------------------------------------------------------------------------

_task_resets: dict[str, Token[str | None]] = {}


def carry_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """`before_task_publish`: a task enqueued during a request carries its id."""
    request_id = _request_id.get()
    if request_id is not None and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


def adopt_request_id(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """`task_prerun`: the task's records carry the id of the request that enqueued it
    (a task run eagerly inside a request keeps the request's own)."""
    carried = getattr(getattr(task, "request", None), TASK_HEADER, None)
    if task_id is None:
        return
    if isinstance(carried, str) and REQUEST_ID_PATTERN.fullmatch(carried):
        _task_resets[task_id] = _request_id.set(carried)
    else:
        _task_resets[task_id] = _request_id.set(_request_id.get())


def drop_request_id(task_id: str | None = None, **kwargs: Any) -> None:
    """`task_postrun`: back to the id in force before the task."""
    reset = _task_resets.pop(task_id, None) if task_id is not None else None
    if reset is not None:
        try:
            _request_id.reset(reset)
        except ValueError:  # set in another context (cannot happen in a worker)
            _request_id.set(None)
