"""The authentication backend of web sign-ins: django-axes' rate limit first."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class RateLimitBackend(AxesStandaloneBackend):
    """django-axes in front of every web sign-in (the dashboard's and the admin's).

    A sign-in without a request (the test client's `login()`, code that checks a
    password) has no address to rate-limit and is left to the next backend; every
    sign-in through a page passes its request."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
