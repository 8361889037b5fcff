"""Errors raised by services; the API turns each into a problem+json response."""

from __future__ import annotations


class ParleyError(Exception):
    """A request that cannot be carried out, with a stable machine-readable code."""

    status = 400
    code = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(ParleyError):
    status = 404
    code = "not-found"
    title = "Not found"


class AlreadyExists(ParleyError):
    status = 409
    code = "already-exists"
    title = "Already exists"


class Conflict(ParleyError):
    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidValue(ParleyError):
    status = 400
    code = "validation-error"
    title = "Invalid request"


class Locked(ParleyError):
    """The decision is not the person's to change (essential purpose, age rule, law)."""

    status = 409
    code = "consent-locked"
    title = "This decision cannot be changed"


class IdempotencyKeyReused(ParleyError):
    status = 422
    code = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class LinkUsed(ParleyError):
    """A dashboard sign-in link that has already signed someone in."""

    status = 410
    code = "link-used"
    title = "This link has already been used"


class LinkExpired(ParleyError):
    status = 410
    code = "link-expired"
    title = "This link has expired"
