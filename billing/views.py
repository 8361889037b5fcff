"""The printable invoice page (staff only: wired through the admin, `admin.py`)."""

from __future__ import annotations

from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from billing.models import Invoice

VIEW_PERMISSION = "billing.view_invoice"


def printable_invoice(
    request: HttpRequest, invoice_id: int, model_admin: ModelAdmin
) -> HttpResponse:
    """One invoice or credit note as a page to print (print CSS, no script)."""
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    invoice = get_object_or_404(
        Invoice.objects.select_related("account", "credits").prefetch_related("lines"),
        pk=invoice_id,
    )
    return TemplateResponse(
        request,
        "billing/invoice.html",
        {"invoice": invoice, "lines": invoice.lines.all(), "title": invoice.number},
    )
