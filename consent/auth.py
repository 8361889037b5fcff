"""Bearer-token authentication of service accounts, and scope checks."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from config import logs
from consent.models import ServiceToken

TOKEN_PREFIX = "prl_"  # noqa: S105 (a marker, not a secret)  # nosec B105
# last_used_at is informative; writing it on every request would put a write on
# the hot path of every consent check.
LAST_USED_RESOLUTION = timedelta(minutes=5)


# Verified tokens are remembered in each web process for API_TOKEN_CACHE_SECONDS, so
# the hot path does not look the token up on every request. That is the bound on how
# long a revoked token (or a deactivated account) keeps working in *other* processes;
# the process that revokes it forgets it at once (`forget_token`).
_verified: dict[str, tuple[float, ServiceToken]] = {}
_verified_lock = threading.Lock()
_VERIFIED_MAX = 10_000


def forget_token(token_hash: str | None = None) -> None:
    """Drops one token (or all) from this process's cache of verified tokens."""
    with _verified_lock:
        if token_hash is None:
            _verified.clear()
        else:
            _verified.pop(token_hash, None)


def verified_token(raw: str) -> ServiceToken | None:
    """The valid token whose raw value this is (cached, see above), or None."""
    return _verified_token(hash_token(raw))


def _verified_token(token_hash: str) -> ServiceToken | None:
    """The valid token with this hash, from the cache while it is fresh."""
    now = time.monotonic()
    cached = _verified.get(token_hash)
    if cached is not None and cached[0] > now:
        return cached[1]
    token = (
        ServiceToken.objects.select_related("account")
        .filter(token_hash=token_hash, revoked_at__isnull=True, account__is_active=True)
        .first()
    )
    if token is None:
        forget_token(token_hash)
        return None
    moment = timezone.now()
    if token.last_used_at is None or moment - token.last_used_at > LAST_USED_RESOLUTION:
        ServiceToken.objects.filter(pk=token.pk).update(last_used_at=moment)
    with _verified_lock:
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[token_hash] = (now + settings.API_TOKEN_CACHE_SECONDS, token)
    return token


def hash_token(raw: str) -> str:
    """SHA-256 of a token: tokens carry 256 bits of entropy, so a fast hash suffices."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_raw_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServicePrincipal:
    """What `request.user` holds on the API: the calling service and its token."""

    token: ServiceToken

    is_authenticated = True
    is_anonymous = False

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.token.scopes)

    @property
    def actor_id(self) -> str:
        return f"service:{self.token.account.name}"


class ServiceTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ServicePrincipal, ServiceToken] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != b"bearer" or len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Use 'Authorization: Bearer <token>' with a single token."
            )
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token is not valid.") from None
        token = _verified_token(hash_token(raw))
        if token is None:
            raise exceptions.AuthenticationFailed("The token is not valid or has been revoked.")
        logs.note_account(request, token.account_id)
        return ServicePrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="parley"'


class HasScope(BasePermission):
    """Grants access when the token holds the scope the view names for the method.

    A view declares `required_scopes = {"GET": "consent:read", "POST": "consent:write"}`;
    a handler it does not list is refused, so a new method cannot slip through unscoped
    (a method without a handler gets the view's 405).
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, ServicePrincipal):
            raise exceptions.NotAuthenticated("A bearer token is required.")
        required: dict[str, str] = getattr(view, "required_scopes", {})
        method = "GET" if request.method == "HEAD" else (request.method or "")
        scope = required.get(method)
        if scope is None:
            # A method the view has no handler for gets its 405 (with Allow) from the
            # view; a handler without a scope is refused.
            return not hasattr(view, method.lower())
        if scope not in principal.scopes:
            raise exceptions.PermissionDenied(f"This token lacks the scope '{scope}'.")
        return True


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "consent.auth.ServiceTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}
