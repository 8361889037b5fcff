"""RFC 9457 problem details for every API error, and strict request bodies."""

from __future__ import annotations

import logging
import sys
from typing import Any

import kombu.exceptions
import psycopg
import redis.exceptions
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from consent.errors import ParleyError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# A backing service that is down or restarting: the request may succeed if retried, so
# it is a 503 with Retry-After, never a 500. Django wraps the driver's errors, but a
# raw connection (config/sql.py) can raise psycopg's own; the broker (kombu) and a
# Redis client raise theirs.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
BROKER_ERRORS: tuple[type[Exception], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
RETRY_AFTER_SECONDS = 5


def problem_type(code: str) -> str:
    return f"urn:parley:problem:{code}"


def problem_body(
    *, status_code: int, code: str, title: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    return {
        "type": problem_type(code),
        "title": title,
        "status": status_code,
        "detail": detail,
        "instance": instance,
        **extra,
    }


def flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turns DRF's nested error structure into [{field, message}] with dotted paths."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            out.extend(flatten_errors(value, path))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [{"field": prefix, "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out.extend(flatten_errors(item, f"{prefix}[{index}]"))
        return out
    return [{"field": prefix, "message": str(detail)}]


_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.NotAuthenticated: ("not-authenticated", "Authentication required"),
    exceptions.AuthenticationFailed: ("authentication-failed", "Authentication failed"),
    exceptions.PermissionDenied: ("forbidden", "Forbidden"),
    exceptions.NotFound: ("not-found", "Not found"),
    exceptions.MethodNotAllowed: ("method-not-allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not-acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported-media-type", "Unsupported media type"),
    exceptions.ParseError: ("malformed-request", "Malformed request body"),
    exceptions.Throttled: ("rate-limited", "Too many requests"),
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    instance = request.path if request is not None else ""

    if isinstance(exc, ParleyError):
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
        body = problem_body(
            status_code=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=instance,
            **({"errors": errors} if errors else {}),
        )
        return Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)

    unavailable = _unavailable(exc)
    if unavailable is not None:
        logger.error("%s unavailable: %s", unavailable, type(exc).__name__)
        return Response(
            _unavailable_body(unavailable, instance),
            status=503,
            content_type=PROBLEM_CONTENT_TYPE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        response.data = problem_body(
            status_code=response.status_code,
            code="validation-error",
            title="Invalid request",
            detail="; ".join(
                f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
            ),
            instance=instance,
            errors=errors,
        )
    elif isinstance(exc, exceptions.APIException):
        code, title = next(
            (v for k, v in _DRF_CODES.items() if isinstance(exc, k)),
            ("error", "Error"),
        )
        response.data = problem_body(
            status_code=response.status_code,
            code=code,
            title=title,
            detail=str(exc.detail),
            instance=instance,
        )
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def _unavailable(exc: BaseException | None) -> str | None:
    """Which backing service the error says is unavailable, if it is that kind."""
    if isinstance(exc, DATABASE_ERRORS):
        return "database"
    if isinstance(exc, BROKER_ERRORS):
        return "message broker"
    return None


def _unavailable_body(service: str, instance: str) -> dict[str, Any]:
    return problem_body(
        status_code=503,
        code="service-unavailable",
        title="Service unavailable",
        detail=f"The {service} is unavailable; retry shortly.",
        instance=instance,
    )


def service_unavailable(request: HttpRequest, service: str) -> HttpResponse:
    """503 with Retry-After: a problem on the API, a plain page elsewhere. Renders
    without the database or the session (either may be what is down)."""
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            _unavailable_body(service, request.path),
            status=503,
            content_type=PROBLEM_CONTENT_TYPE,
        )
    else:
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _page_or_problem(
    request: HttpRequest, status_code: int, code: str, title: str, detail: str
) -> HttpResponse | None:
    if not request.path.startswith("/api/"):
        return None
    return JsonResponse(
        problem_body(
            status_code=status_code, code=code, title=title, detail=detail, instance=request.path
        ),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from django.views import defaults

    return _page_or_problem(
        request, 404, "not-found", "Not found", "No such resource."
    ) or defaults.page_not_found(request, exception or Http404())


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from django.views import defaults

    return _page_or_problem(
        request, 400, "bad-request", "Bad request", "The request could not be understood."
    ) or defaults.bad_request(request, exception or Exception())


def handler500(request: HttpRequest) -> HttpResponse:
    from django.views import defaults

    # Django calls this while handling the exception, so it is still at hand: errors
    # that escape DRF (the fast lanes, the dashboard, the admin, middleware) and mean a
    # backing service is down are a 503 too.
    unavailable = _unavailable(sys.exception())
    if unavailable is not None:
        return service_unavailable(request, unavailable)
    return _page_or_problem(
        request,
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "Something went wrong on our side; it has been logged.",
    ) or defaults.server_error(request)


class StrictSerializer(serializers.Serializer):
    """A request serializer that refuses fields it does not know, naming them."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a JSON object."]}, code="invalid"
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown field."] for name in unknown}, code="unknown_field"
            )
        return super().to_internal_value(data)


class CursorPage(CursorPagination):
    """The API's cursor pagination: newest first, 50 a page (`limit` up to 200). DRF
    answers a bad cursor with 404; here the resource exists and the parameter is
    wrong, so it is a 400 naming `cursor`."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise serializers.ValidationError({"cursor": ["Invalid cursor."]}) from None
