"""The privacy dashboard's ads pages: why am I seeing this ad, hidden advertisers,
and erasing ad data. Changes go through `ads.services`; the session's subject, the
page frame and the error pages come from `consent.dashboard`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ads import selectors, services
from ads.choices import Feature, Placement
from ads.models import AdDecision
from consent.dashboard import bad_request_page, not_found_page, page, purpose_name, subject_page
from consent.errors import NotFound
from consent.models import Purpose, Subject


class HideForm(forms.Form):
    """Names the shown ad whose advertiser the subject no longer wants to see."""

    decision = forms.UUIDField()


def _explain(decision: AdDecision, purposes: dict[str, str]) -> dict[str, Any]:
    """What a decision used, in words: each feature with the values targeting saw,
    and the purposes that allowed them."""
    features = [
        {
            "name": Feature(key).label if key in Feature.values else key,
            "values": ", ".join(str(v) for v in values),
        }
        for key, values in sorted(decision.features_used.items())
    ]
    return {
        "decision": decision,
        "placement": Placement(decision.placement).label
        if decision.placement in Placement.values
        else decision.placement,
        "features": features,
        "purposes": [purposes.get(key, key) for key in decision.purposes_used],
    }


@subject_page
@require_GET
def ads(request: HttpRequest, subject: Subject) -> HttpResponse:
    """Why am I seeing this ad, for the recent ads, and the advertisers hidden."""
    purposes = {p.key: purpose_name(p) for p in Purpose.objects.all()}
    context = {
        "shown": [_explain(d, purposes) for d in selectors.recent_ads(subject=subject)],
        "hidden": list(selectors.hidden_advertisers(subject=subject)),
    }
    return page(request, "dashboard/ads.html", context, subject=subject)


@subject_page
@require_POST
def hide(request: HttpRequest, subject: Subject) -> HttpResponse:
    form = HideForm(request.POST)
    if not form.is_valid():
        return bad_request_page(request, subject)
    try:
        advertiser = services.hide_advertiser(
            subject=subject, decision_id=form.cleaned_data["decision"]
        )
    except NotFound:
        return not_found_page(request, subject)
    messages.success(
        request,
        _("You will not see ads from %(advertiser)s again.") % {"advertiser": advertiser.name},
    )
    return redirect("dashboard-ads")


@subject_page
@require_POST
def unhide(request: HttpRequest, subject: Subject, advertiser_id: int) -> HttpResponse:
    try:
        services.show_advertiser_again(subject=subject, advertiser_id=advertiser_id)
    except NotFound:
        return not_found_page(request, subject)
    messages.success(request, _("The advertiser is no longer hidden."))
    return redirect("dashboard-ads")


@subject_page
@require_http_methods(["GET", "POST"])
def erase(request: HttpRequest, subject: Subject) -> HttpResponse:
    """A confirmation page; the POST from it erases the subject's ad data."""
    if request.method == "POST":
        services.erase_ad_data(subject=subject)
        messages.success(
            request,
            _("Your ad data has been erased. Your privacy choices and their history are kept."),
        )
        return redirect("dashboard-data")
    return page(request, "dashboard/erase_ads.html", {}, subject=subject)
