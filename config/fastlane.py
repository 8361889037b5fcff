"""The API's two hottest requests answered ahead of the rest of the middleware chain.

`POST /api/v1/consent-checks` and `POST /api/v1/ads/decisions` have fast lanes
(`consent/fastlane.py`, `ads/fastlane.py`) that answer a plainly valid request without
DRF. Called from their views, they still sat behind the whole middleware chain and the
URL resolver — sessions, locale, CSRF, authentication, messages, clickjacking, axes —
none of which a bearer-token JSON request uses, and which cost about a quarter of a
single check's time in process (docs/benchmarks.md).

`FastLaneMiddleware` sits after the request id, the security headers, the body-size
limit and the Content-Security-Policy, and offers these two paths to their lane once
(`consent.fastlane.answer_once`: the view does not ask again). An answered request gets
what the skipped middleware would have added to it — `Content-Language` and
`Vary: Accept-Language` (locale), `X-Frame-Options` (clickjacking), `Content-Length`
(common) — and its route for the request log; everything else, and every request the
lane declines, goes down the chain as before. `tests/test_fastlane_middleware.py`
compares the headers and bodies with the whole chain's.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import ResolverMatch, resolve
from django.utils import translation
from django.utils.cache import patch_vary_headers

from ads import fastlane as ads_fastlane
from consent import fastlane

Lane = Callable[[HttpRequest], HttpResponse | None]


def _consent_check(request: HttpRequest) -> HttpResponse | None:
    return fastlane.consent_check(request)


def _ad_decision(request: HttpRequest) -> HttpResponse | None:
    return ads_fastlane.decide(request)


# Each lane is looked up in its module on every request, as the views do, so that
# what replaces it there (a test's spy) is what runs.
LANES: dict[str, Lane] = {
    "/api/v1/consent-checks": _consent_check,
    "/api/v1/ads/decisions": _ad_decision,
}


class FastLaneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._matches: dict[str, ResolverMatch] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        lane = LANES.get(request.path_info)
        if lane is None or request.method != "POST":
            return self.get_response(request)
        language = translation.get_language_from_request(request)
        translation.activate(language)  # as the locale middleware would
        response = fastlane.answer_once(lane, request)
        if response is None:
            return self.get_response(request)
        request.resolver_match = self._match(request.path_info)  # the request log's route
        patch_vary_headers(response, ("Accept-Language",))
        response.headers.setdefault("Content-Language", language)
        if response.get("X-Frame-Options") is None:
            response["X-Frame-Options"] = settings.X_FRAME_OPTIONS.upper()
        if not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response

    def _match(self, path: str) -> ResolverMatch:
        """The path's match, resolved once per process (the lanes' paths are fixed)."""
        match = self._matches.get(path)
        if match is None:
            match = self._matches[path] = resolve(path)
        return match
