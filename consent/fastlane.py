"""The consent check's fast lane: `POST /api/v1/consent-checks` without DRF's machinery
when the request is plainly valid.

A single check is the request every ad and every data use makes, and most of its time
went to the framework (content negotiation, request wrapping, a serializer built per
request, response rendering), not to the one query. This lane reads an ordinary request
directly — bearer token from the process's cache with the `consent:read` scope, a
JSON object with exactly `purpose` (a slug) and `subjects` (1 to 1,000 trimmed strings
of at most 64 characters) — and answers with the body DRF would render. Anything else
(no or bad token, a missing scope, any doubt about the body, an unknown purpose) goes
to the DRF view, which decides and words the error, so the lane can only take what
the view would accept. The token's rate limit is counted here (`consent/ratelimit.py`),
once: a request passed on to the view is not counted again.
`tests/consent/test_fastlane.py` checks both give the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring as _string  # what json.dumps writes of a str
from typing import Any

from django.http import HttpRequest, HttpResponse

from config import logs
from consent import auth, ratelimit, selectors
from consent.choices import DenialReason, Scope
from consent.errors import NotFound

READ = Scope.CONSENT_READ.value
MAX_ID_LENGTH = 64
MAX_PURPOSE_LENGTH = 64
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


# --- what every fast lane checks (the ads app's decisions take one too) ---------------------


def token(request: HttpRequest, scope: str) -> auth.ServiceToken | None:
    """The bearer token, verified (from the process's cache), if it holds `scope`."""
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw or " " in raw or not raw.isascii():
        return None
    verified = auth.verified_token(raw)
    if verified is None or scope not in verified.scopes:
        return None
    logs.note_account(request, verified.account_id)  # for the request's log line
    return verified


def plain_text(value: Any, max_length: int) -> bool:
    """A string the DRF field would take as it is: not empty, not too long, nothing
    to trim, no NUL or lone surrogate (those it refuses or changes)."""
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and value == value.strip()
        and "\x00" not in value
        and not _SURROGATE.search(value)
    )


def json_object(request: HttpRequest, keys: set[str]) -> dict[str, Any] | None:
    """The JSON object of the body, if it has exactly these keys; None for anything
    else (another content type, bad UTF-8, NaN, broken JSON...)."""
    if request.content_type != "application/json":
        return None
    try:
        data = json.loads(request.body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # nested too deeply: the parser words it
        return None
    if type(data) is not dict or data.keys() != keys:
        return None
    return data


TRIED = "_parley_fast_lane_tried"


def answer_once(
    lane: Callable[[HttpRequest], HttpResponse | None], request: HttpRequest
) -> HttpResponse | None:
    """The lane's answer to a request it has not been offered yet; None otherwise. The
    middleware (`config/fastlane.py`) offers it first; the view, reached when the lane
    declined, does not ask again (the body would be read twice)."""
    if getattr(request, TRIED, False):
        return None
    setattr(request, TRIED, True)
    return lane(request)


def json_response(payload: dict[str, Any], *, allow: str) -> HttpResponse:
    """The body DRF's JSON renderer would write, with the view's Allow header."""
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    response = HttpResponse(content.encode("utf-8"), content_type="application/json")
    response["Allow"] = allow
    return response


# --- the consent check ---------------------------------------------------------------------


def _body(request: HttpRequest) -> tuple[str, list[str]] | None:
    data = json_object(request, {"purpose", "subjects"})
    if data is None:
        return None
    purpose, subjects = data["purpose"], data["subjects"]
    if (
        type(purpose) is not str
        or len(purpose) > MAX_PURPOSE_LENGTH
        or not _SLUG.match(purpose)
        or type(subjects) is not list
        or not 0 < len(subjects) <= selectors.MAX_BULK_CHECK
        or not all(plain_text(subject, MAX_ID_LENGTH) for subject in subjects)
    ):
        return None
    return purpose, subjects


def consent_check(request: HttpRequest) -> HttpResponse | None:
    """The answer to a plainly valid check, or None to let the DRF view answer."""
    if request.method != "POST" or (verified := token(request, READ)) is None:
        return None
    throttled = ratelimit.fast_lane_refusal(request, verified)
    if throttled is not None:
        return throttled
    body = _body(request)
    if body is None:
        return None
    purpose, subjects = body
    try:
        results = selectors.check_consent_by_key(purpose_key=purpose, external_ids=subjects)
    except NotFound:
        return None
    return _check_response(purpose, results)


# Each result's end, by its reason: what `json_response` writes after the subject.
_RESULT_TAILS: dict[DenialReason | None, str] = {
    None: ',"allowed":true,"reason":null}',
    **{reason: f',"allowed":false,"reason":{_string(reason.value)}}}' for reason in DenialReason},
}


def _check_response(purpose: str, results: list[selectors.CheckResult]) -> HttpResponse:
    """The body `json_response` writes for the check's answer, put together from the
    two strings of each result (a thousand dictionaries to encode cost several times
    as much); `tests/consent/test_fastlane.py` holds the two to the same bytes."""
    tails = _RESULT_TAILS
    items = ",".join(['{"subject":' + _string(r.subject) + tails[r.reason] for r in results])
    content = '{"purpose":' + _string(purpose) + ',"results":[' + items + "]}"
    response = HttpResponse(content.encode("utf-8"), content_type="application/json")
    response["Allow"] = "POST, OPTIONS"
    return response
