"""Limits on what reaches the API's views: the body's size, and text no id or field
can hold.

Django refuses an oversized body only when a view reads `request.body` (with a 400),
and DRF's parsers read the stream without that check; one middleware gives every API
endpoint, fast lanes included, the same answer: 413 problem+json for a body longer
than `DATA_UPLOAD_MAX_MEMORY_SIZE` (1 MiB by default), and for a length that is not a
number. A path with control characters (NUL included) names nothing: 404 before any
query sees it."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from consent.problems import PROBLEM_CONTENT_TYPE, problem_body

API_PREFIX = "/api/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_PREFIX):
            refused = self._refused(request) or self._unknown(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    @staticmethod
    def _unknown(request: HttpRequest) -> HttpResponse | None:
        if not _CONTROL.search(request.path_info):
            return None
        body = problem_body(
            status_code=404,
            code="not-found",
            title="Not found",
            detail="No resource has control characters in its address.",
            instance=request.path_info.encode("ascii", "backslashreplace").decode(),
        )
        return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)

    @staticmethod
    def _refused(request: HttpRequest) -> HttpResponse | None:
        length = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length.isdigit() and (limit is None or int(length) <= limit):
            return None
        detail = (
            f"The body is larger than {limit:,} bytes."
            if length.isdigit()
            else "The Content-Length header is not a number."
        )
        status = 413 if length.isdigit() else 400
        body = problem_body(
            status_code=status,
            code="payload-too-large" if status == 413 else "bad-request",
            title="Payload too large" if status == 413 else "Bad request",
            detail=detail,
            instance=request.path,
        )
        return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
