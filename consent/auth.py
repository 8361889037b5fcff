"""Bearer-token authentication of service accounts, and scope checks."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from consent.models import ServiceToken

TOKEN_PREFIX = "prl_"  # noqa: S105 (a marker, not a secret)
# last_used_at is informative; writing it on every request would put a write on
# the hot path of every consent check.
LAST_USED_RESOLUTION = timedelta(minutes=5)


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
        token = (
            ServiceToken.objects.select_related("account")
            .filter(token_hash=hash_token(raw))
            .first()
        )
        if token is None or token.revoked_at is not None or not token.account.is_active:
            raise exceptions.AuthenticationFailed("The token is not valid or has been revoked.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ServiceToken.objects.filter(pk=token.pk).update(last_used_at=now)
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
