"""The frame every privacy-dashboard page shares, whichever app draws the page.

A dashboard session belongs to one subject: its id is kept in the session under
`SESSION_KEY`, put there only by a sign-in (a single-use link or a demo password), and
every page reads the subject from there — never from the URL or a form field — so a
session can reach nothing but its own subject's data.

`subject_page` wraps a view: it finds the session's subject (or sends the visitor to
the sign-in page), speaks the subject's language unless they chose another, honours
Global Privacy Control once, and marks the response private. The ads app's dashboard
pages use it too (`ads → consent`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import formats, translation
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from consent import selectors, services
from consent.choices import ActorType, Source
from consent.models import MetadataCategory, PolicyVersion, Purpose, Subject

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

SESSION_KEY = "parley_dashboard_subject"

P = ParamSpec("P")
SubjectView = Callable[Concatenate[HttpRequest, Subject, P], HttpResponse]


# --- sessions -----------------------------------------------------------------------------


def sign_in(request: HttpRequest, subject: Subject, user: User | None = None) -> None:
    """Starts a dashboard session for `subject` under a new session key (no fixation).

    With `user` (the demo password sign-in) the Django user is logged in too, which
    also tells the rate limit that the attempt succeeded."""
    from django.contrib.auth import login

    if user is not None:
        login(request, user)
    else:
        request.session.cycle_key()
    request.session[SESSION_KEY] = subject.pk
    request.session.set_expiry(int(settings.DASHBOARD_SESSION_AGE.total_seconds()))


def sign_out(request: HttpRequest) -> None:
    """Ends the session altogether: the subject, any logged-in user, the CSRF secret."""
    from django.contrib.auth import logout

    logout(request)
    request.user = AnonymousUser()


def current_subject(request: HttpRequest) -> Subject | None:
    subject_id = request.session.get(SESSION_KEY)
    if not isinstance(subject_id, int):
        return None
    return selectors.dashboard_subject(subject_id=subject_id)


def actor_of(subject: Subject) -> services.Actor:
    return services.Actor(ActorType.SUBJECT, subject.external_id)


def proof_of(request: HttpRequest, *, shown: PolicyVersion | None) -> services.Proof:
    """What proves a decision made on the dashboard: the version shown, the page's
    language, the network (never the full address) and the browser."""
    return services.Proof(
        notice_version=shown,
        language=translation.get_language() or settings.LANGUAGE_CODE,
        ip_truncated=services.truncate_ip(request.META.get("REMOTE_ADDR")),
        user_agent=request.headers.get("User-Agent", ""),
    )


def gpc_requested(request: HttpRequest) -> bool:
    return request.headers.get("Sec-GPC", "").strip() == "1"


def _activate_language(request: HttpRequest, subject: Subject) -> None:
    """The subject's own language, unless they picked one with the switcher (the
    cookie) or it is not one the dashboard speaks (then Accept-Language decides)."""
    if request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME):
        return
    try:
        code = translation.get_supported_language_variant(subject.language.lower())
    except LookupError:
        return
    translation.activate(code)
    request.LANGUAGE_CODE = code


def subject_page(view: SubjectView[P]) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """A dashboard view, called with the session's subject as its second argument."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        subject = current_subject(request)
        if subject is None:
            response: HttpResponse = redirect("dashboard-signin")
        else:
            _activate_language(request, subject)
            if gpc_requested(request) and subject.gpc_signalled_at is None:
                services.apply_gpc(
                    external_id=subject.external_id,
                    actor=actor_of(subject),
                    proof=proof_of(request, shown=None),
                )
                subject = selectors.dashboard_subject(subject_id=subject.pk) or subject
            response = view(request, subject, *args, **kwargs)
        patch_cache_control(response, private=True, no_store=True)
        return response

    return wrapper


def public_page(view: Callable[P, HttpResponse]) -> Callable[P, HttpResponse]:
    """A page outside a session (sign-in, errors, policy texts): never cached either,
    since it may carry a CSRF token."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        response = view(*args, **kwargs)
        patch_cache_control(response, private=True, no_store=True)
        return response

    return wrapper


def page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    subject: Subject | None = None,
    status: int = 200,
) -> HttpResponse:
    """Renders a dashboard page; with a subject, the frame shows the pending-notice
    banner and the Global Privacy Control status."""
    frame: dict[str, Any] = {"subject": subject, "gpc_request": gpc_requested(request)}
    if subject is not None and "pending_notice" not in context:
        frame["pending_notice"] = selectors.pending_notice(subject=subject)
    return render(request, template, {**frame, **context}, status=status)


def error_page(
    request: HttpRequest,
    *,
    status: int,
    heading: str,
    detail: str,
    subject: Subject | None = None,
) -> HttpResponse:
    """A readable page for a request that cannot be carried out (never a bare 500)."""
    return page(
        request,
        "dashboard/error.html",
        {"heading": heading, "detail": detail, "pending_notice": None},
        subject=subject,
        status=status,
    )


def not_found_page(request: HttpRequest, subject: Subject | None) -> HttpResponse:
    """Another subject's record, or one that does not exist: the same answer for both."""
    return error_page(
        request,
        status=404,
        heading=_("Not found"),
        detail=_("There is nothing here for your account."),
        subject=subject,
    )


def bad_request_page(request: HttpRequest, subject: Subject | None) -> HttpResponse:
    return error_page(
        request,
        status=400,
        heading=_("That did not work"),
        detail=_("The form was incomplete or not valid. Go back and try again."),
        subject=subject,
    )


# --- words --------------------------------------------------------------------------------

# The seeded purposes and metadata categories in every language the dashboard speaks.
# Staff may add others in the admin: those are shown with the text typed there.
PURPOSE_TEXT: dict[str, tuple[StrOrPromise, StrOrPromise]] = {
    "service_delivery": (
        gettext_lazy("Deliver your messages and calls"),
        gettext_lazy(
            "We use when messages are sent and your contact details to deliver your "
            "messages and calls. The app cannot work without it, so it is always on. "
            "Your messages stay end-to-end encrypted."
        ),
    ),
    "analytics": (
        gettext_lazy("Product analytics"),
        gettext_lazy(
            "We count how the app's features are used and when messages are sent, in "
            "aggregate, to fix problems and improve the app. We never read your messages."
        ),
    ),
    "ads_personalization": (
        gettext_lazy("Personalised ads in Updates"),
        gettext_lazy(
            "Choose the ads you see in Status and Channels from what you do in the Updates "
            "tab, your general location, your language and your age band. Your messages, "
            "calls and statuses are never used for ads."
        ),
    ),
    "ads_data_sharing": (
        gettext_lazy("Share ad data with partners"),
        gettext_lazy(
            "Share which ads you see and click, and the interests worked out from your "
            "Updates-tab activity, with the company's other services and advertisers' "
            "measurement partners. Some US state laws call this “sale or sharing”. Your "
            "phone number is never shared with advertisers."
        ),
    ),
    "ads_cross_account": (
        gettext_lazy("Ads using your linked accounts"),
        gettext_lazy(
            "If you added this app to Accounts Center, use ad preferences and information "
            "from your other linked accounts to choose your ads. Off unless you turn it on."
        ),
    ),
}

CATEGORY_TEXT: dict[str, StrOrPromise] = {
    "message_timing": gettext_lazy("Message timing"),
    "contact_info": gettext_lazy("Your contact details"),
    "updates_activity": gettext_lazy("Updates-tab activity"),
    "coarse_location": gettext_lazy("General location"),
    "device_language": gettext_lazy("Device language"),
    "age_band": gettext_lazy("Age band"),
    "ad_interactions": gettext_lazy("Ad interactions"),
    "accounts_center": gettext_lazy("Linked accounts"),
    "app_usage": gettext_lazy("App usage"),
}


def purpose_name(purpose: Purpose) -> str:
    text = PURPOSE_TEXT.get(purpose.key)
    return str(text[0]) if text else purpose.name


def purpose_description(purpose: Purpose) -> str:
    text = PURPOSE_TEXT.get(purpose.key)
    return str(text[1]) if text else purpose.description


def category_name(category: MetadataCategory) -> str:
    return str(CATEGORY_TEXT.get(category.key, category.name))


def when(moment: datetime) -> str:
    """A moment in the page's language (times are UTC, and say so)."""
    return _("%(date)s UTC") % {"date": formats.date_format(moment, "DATETIME_FORMAT")}


def state_reason(view: selectors.ConsentView) -> str:
    """Why a purpose is on or off, in the subject's words."""
    if view.locked == "essential":
        return _("Always on: the app needs it to work.")
    if view.locked == "not_live":
        return _("Not available to you yet.")
    if view.locked == "age_restricted":
        return _("Off because of your age.")
    on = when(view.updated_at)
    if view.source in (Source.USER_WEB, Source.USER_APP):
        return _("Your choice on %(date)s.") % {"date": on}
    if view.source == Source.STAFF:
        return _("Changed by support staff on %(date)s.") % {"date": on}
    if view.source == Source.GPC:
        return _("Off because your browser sends Global Privacy Control.")
    if view.source == Source.AGE_RULE:
        return _("Set by an age rule on %(date)s.") % {"date": on}
    return _("Default in your region.")


def locked_reason(view: selectors.ConsentView) -> str | None:
    """Why a purpose cannot be changed here, if it cannot."""
    if view.locked == "essential":
        return _("You cannot turn this off: without it messages and calls cannot be delivered.")
    if view.locked == "not_live":
        return _("You can decide once this feature reaches your region.")
    if view.locked == "age_restricted":
        return _("The law in your region does not allow this for people of your age.")
    return None
