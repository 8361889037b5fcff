"""Views of the project itself, outside any app."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the load balancer: the process answers, nothing more (no database,
    no broker), so a slow dependency never takes healthy web workers out of rotation.

    The benchmark also uses it as the ceiling of one request on this stack: the whole
    middleware chain, a small JSON body, and nothing else."""
    return JsonResponse({"status": "ok"})
