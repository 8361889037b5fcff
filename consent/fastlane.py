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
the view would accept. `tests/consent/test_fastlane.py` checks both give the same
answers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import HttpRequest, HttpResponse

from consent import auth, selectors
from consent.choices import Scope
from consent.errors import NotFound

READ = Scope.CONSENT_READ.value
MAX_ID_LENGTH = 64
MAX_PURPOSE_LENGTH = 64
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _token(request: HttpRequest) -> auth.ServiceToken | None:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw or " " in raw or not raw.isascii():
        return None
    token = auth.verified_token(raw)
    if token is None or READ not in token.scopes:
        return None
    return token


def _plain_id(value: Any) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= MAX_ID_LENGTH
        and value == value.strip()
        and "\x00" not in value
        and not _SURROGATE.search(value)
    )


def _body(request: HttpRequest) -> tuple[str, list[str]] | None:
    if request.content_type != "application/json":
        return None
    try:
        data = json.loads(request.body.decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError:
        return None
    if type(data) is not dict or data.keys() != {"purpose", "subjects"}:
        return None
    purpose, subjects = data["purpose"], data["subjects"]
    if (
        type(purpose) is not str
        or len(purpose) > MAX_PURPOSE_LENGTH
        or not _SLUG.match(purpose)
        or type(subjects) is not list
        or not 0 < len(subjects) <= selectors.MAX_BULK_CHECK
        or not all(_plain_id(subject) for subject in subjects)
    ):
        return None
    return purpose, subjects


def consent_check(request: HttpRequest) -> HttpResponse | None:
    """The answer to a plainly valid check, or None to let the DRF view answer."""
    if request.method != "POST" or _token(request) is None:
        return None
    body = _body(request)
    if body is None:
        return None
    purpose, subjects = body
    try:
        results = selectors.check_consent_by_key(purpose_key=purpose, external_ids=subjects)
    except NotFound:
        return None
    payload = {
        "purpose": purpose,
        "results": [
            {"subject": r.subject, "allowed": r.allowed, "reason": r.reason} for r in results
        ],
    }
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    response = HttpResponse(content.encode("utf-8"), content_type="application/json")
    response["Allow"] = "POST, OPTIONS"
    return response
