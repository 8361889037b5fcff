"""The privacy dashboard's consent pages: sign-in, your choices, the policy update,
history with receipts, your data, and Global Privacy Control.

Views validate input and render every 4xx as a readable page; changes are made by
`consent.services`. The session's subject comes from `consent.dashboard.subject_page`.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from django.contrib import messages
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from consent import selectors, services
from consent.choices import Source
from consent.dashboard import (
    actor_of,
    bad_request_page,
    category_name,
    error_page,
    gpc_requested,
    locked_reason,
    not_found_page,
    page,
    proof_of,
    public_page,
    purpose_description,
    purpose_name,
    sign_in,
    sign_out,
    state_reason,
    subject_page,
)
from consent.errors import (
    Conflict,
    InvalidValue,
    LinkExpired,
    LinkUsed,
    Locked,
    NotFound,
    ParleyError,
)
from consent.forms import ChoiceForm, NoticeForm, SignInForm
from consent.models import PolicyVersion, Subject

HISTORY_PAGE_SIZE = 25
# When Parley started honouring Global Privacy Control (`/.well-known/gpc.json`).
GPC_SUPPORT_SINCE = date(2026, 12, 1)


def refused(request: HttpRequest, subject: Subject | None, exc: ParleyError) -> HttpResponse:
    """The page for a change the services refused."""
    if isinstance(exc, Locked):
        return error_page(
            request,
            status=409,
            heading=_("This choice cannot be changed"),
            detail=_("This setting is locked for your account; the page says why."),
            subject=subject,
        )
    if isinstance(exc, Conflict):
        return error_page(
            request,
            status=409,
            heading=_("This choice is not available yet"),
            detail=_("This feature has not reached your region yet."),
            subject=subject,
        )
    if isinstance(exc, NotFound):
        return not_found_page(request, subject)
    return bad_request_page(request, subject)


def wants_json(request: HttpRequest) -> bool:
    """The page's script asked for an in-place update rather than a new page."""
    return "application/json" in request.headers.get("Accept", "")


# --- signing in and out ------------------------------------------------------------------


@public_page
@require_http_methods(["GET", "POST"])
def signin(request: HttpRequest) -> HttpResponse:
    """The demo password sign-in; rate-limited by django-axes (AxesMiddleware answers
    a locked-out attempt with the lockout page)."""
    form = SignInForm(request.POST if request.method == "POST" else None)
    failed = False
    if request.method == "POST" and form.is_valid():
        user = authenticate(
            request,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password"],
        )
        subject = getattr(user, "subject", None)
        if isinstance(user, User) and isinstance(subject, Subject) and subject.erased_at is None:
            sign_in(request, subject, user)
            return redirect("dashboard-home")
        failed = True
    status = 400 if request.method == "POST" else 200
    return page(request, "dashboard/signin.html", {"form": form, "failed": failed}, status=status)


def _link_problem(request: HttpRequest, exc: ParleyError) -> HttpResponse:
    detail = _(
        "Sign-in links work once, for a few minutes. Open the privacy dashboard from "
        "the app's settings again to get a new link."
    )
    if isinstance(exc, LinkUsed):
        return error_page(
            request, status=410, heading=_("This link has already been used"), detail=detail
        )
    if isinstance(exc, LinkExpired):
        return error_page(request, status=410, heading=_("This link has expired"), detail=detail)
    return error_page(request, status=404, heading=_("This link does not work"), detail=detail)


@public_page
@require_http_methods(["GET", "POST"])
def link_signin(request: HttpRequest, token: str) -> HttpResponse:
    """A single-use link from the app. Opening it only shows a button: signing in is a
    POST, so a link scanner that fetches the address does not use the link up, and no
    other site can sign a visitor into someone else's dashboard."""
    try:
        if request.method == "POST":
            subject = services.redeem_dashboard_link(raw_token=token)
            sign_in(request, subject)
            return redirect("dashboard-home")
        selectors.dashboard_link(raw_token=token, now=timezone.now())
    except (NotFound, LinkUsed, LinkExpired) as exc:
        return _link_problem(request, exc)
    return page(request, "dashboard/link.html", {})


@public_page
@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    sign_out(request)
    return redirect("dashboard-signed-out")


@public_page
@require_GET
def signed_out(request: HttpRequest) -> HttpResponse:
    return page(request, "dashboard/signed_out.html", {})


# --- your choices --------------------------------------------------------------------------


def _cards(subject: Subject) -> list[dict[str, Any]]:
    return [
        {
            "key": card.consent.purpose.key,
            "name": purpose_name(card.consent.purpose),
            "description": purpose_description(card.consent.purpose),
            "categories": [category_name(c) for c in card.categories],
            "view": card.consent,
            "reason": state_reason(card.consent),
            "locked_reason": locked_reason(card.consent),
        }
        for card in selectors.dashboard_purposes(subject=subject)
    ]


@subject_page
@require_GET
def home(request: HttpRequest, subject: Subject) -> HttpResponse:
    """Your choices: every purpose, what it uses and never uses, its state and why."""
    return page(request, "dashboard/choices.html", {"cards": _cards(subject)}, subject=subject)


@subject_page
@require_POST
def choice(request: HttpRequest, subject: Subject, purpose_key: str) -> HttpResponse:
    """Turns one purpose on or off (`user_web`, with the proof context)."""
    form = ChoiceForm(request.POST)
    if not form.is_valid():
        return bad_request_page(request, subject)
    granted: bool = form.cleaned_data["granted"]
    try:
        state = services.record_choice(
            external_id=subject.external_id,
            purpose_key=purpose_key,
            granted=granted,
            source=Source.USER_WEB,
            actor=actor_of(subject),
            proof=proof_of(request, shown=subject.policy_version),
            gpc=gpc_requested(request),
        )
    except ParleyError as exc:
        return refused(request, subject, exc)
    name = purpose_name(state.purpose)
    message = (
        _("Saved: “%(purpose)s” is now on.") if granted else _("Saved: “%(purpose)s” is now off.")
    ) % {"purpose": name}
    if wants_json(request):
        card = next(c for c in _cards(subject) if c["key"] == purpose_key)
        html = render_to_string("dashboard/includes/purpose.html", {"c": card}, request=request)
        return JsonResponse({"message": message, "html": html})
    messages.success(request, message)
    return redirect(f"{reverse('dashboard-home')}#purpose-{purpose_key}")


# --- the policy update ---------------------------------------------------------------------


@subject_page
@require_http_methods(["GET", "POST"])
def policy_update(request: HttpRequest, subject: Subject) -> HttpResponse:
    """The pending notice: what changed and the decisions it asks for."""
    notice = selectors.pending_notice(subject=subject)
    if notice is None:
        return page(
            request, "dashboard/policy_update.html", {"pending_notice": None}, subject=subject
        )
    purposes = selectors.decidable_notice_purposes(subject=subject, notice=notice)
    form = NoticeForm(request.POST if request.method == "POST" else None, purposes=purposes)
    if request.method == "POST":
        if not form.is_valid():
            context = {"pending_notice": notice, "notice": notice, "form": form}
            return page(
                request, "dashboard/policy_update.html", context, subject=subject, status=400
            )
        try:
            services.decide_notice(
                external_id=subject.external_id,
                decisions=form.decisions(),
                actor=actor_of(subject),
                proof=proof_of(request, shown=notice.version),
            )
        except (InvalidValue, NotFound, Conflict, Locked) as exc:
            return refused(request, subject, exc)
        messages.success(request, _("Thank you: your decisions are saved."))
        return redirect("dashboard-home")
    context = {"pending_notice": notice, "notice": notice, "form": form}
    return page(request, "dashboard/policy_update.html", context, subject=subject)


@public_page
@require_GET
def policy_text(request: HttpRequest, label: str) -> HttpResponse:
    """A published policy version's text (consent receipts link here)."""
    version = PolicyVersion.objects.filter(label=label, published_at__isnull=False).first()
    if version is None:
        return error_page(
            request,
            status=404,
            heading=_("No such policy version"),
            detail=_("There is no published privacy policy with this label."),
        )
    return page(request, "dashboard/policy_text.html", {"version": version})


# --- history and receipts ------------------------------------------------------------------


@subject_page
@require_GET
def history(request: HttpRequest, subject: Subject) -> HttpResponse:
    """Every consent event, newest first, a page at a time."""
    events = Paginator(selectors.subject_events(subject=subject), HISTORY_PAGE_SIZE)
    events_page = events.get_page(request.GET.get("page"))
    rows = [
        {
            "event": event,
            "purpose": purpose_name(event.purpose),
            "source": event.get_source_display(),
        }
        for event in events_page
    ]
    context = {"events": events_page, "rows": rows}
    return page(request, "dashboard/history.html", context, subject=subject)


@subject_page
@require_GET
def receipt(request: HttpRequest, subject: Subject, event_id: int) -> HttpResponse:
    """A consent receipt (Kantara v1.1 fields) for one of the subject's own events."""
    try:
        event = selectors.get_event(subject=subject, event_id=event_id)
    except NotFound as exc:
        return refused(request, subject, exc)
    body = json.dumps(selectors.consent_receipt(event=event), indent=2, ensure_ascii=False)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="consent-receipt-{event.pk}.json"'
    return response


# --- your data -----------------------------------------------------------------------------


@subject_page
@require_GET
def your_data(request: HttpRequest, subject: Subject) -> HttpResponse:
    return page(request, "dashboard/your_data.html", {}, subject=subject)


@subject_page
@require_GET
def export(request: HttpRequest, subject: Subject) -> HttpResponse:
    """Everything Parley holds about the subject, every app's part included."""
    data = selectors.subject_export(subject=subject)
    body = json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    filename = f"parley-data-{timezone.now():%Y-%m-%d}.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Global Privacy Control ----------------------------------------------------------------


@require_GET
def gpc_json(request: HttpRequest) -> JsonResponse:
    """Declares that Parley honours GPC (the GPC specification's well-known resource)."""
    return JsonResponse({"gpc": True, "lastUpdate": GPC_SUPPORT_SINCE.isoformat()})
