"""Custom pages of the staff admin: consent statistics (page and CSV), the support
form that records a staff consent change, and the rollout controls.

Each view is wired in `consent/admin.py` through a ModelAdmin's `get_urls`, wrapped
by `admin_site.admin_view` (staff login, CSRF, no caching); each checks its own
permission and raises PermissionDenied (403) without it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from consent import services
from consent.choices import ActorType, RolloutStatus, Source
from consent.errors import ParleyError
from consent.forms import StaffChangeForm, StatisticsFilterForm
from consent.models import ConsentState, Rollout, RolloutAction, RolloutPhase, Subject

if TYPE_CHECKING:
    from types import ModuleType

STATISTICS_PERMISSION = "consent.view_consent_statistics"
STAFF_CHANGE_PERMISSION = "consent.record_staff_change"
CONTROL_PERMISSION = "consent.control_rollout"

ALL_JURISDICTIONS = "All"
ACTION_HISTORY_LIMIT = 100


def staff_actor_id(request: HttpRequest) -> str:
    """How staff appear as actors: on consent events and on rollout actions."""
    return f"staff:{request.user.get_username()}"


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


# --- consent statistics -------------------------------------------------------------


@dataclass
class StatisticsRow:
    """Current states of one purpose in one jurisdiction (or all of them)."""

    jurisdiction: str
    purpose: str
    granted: int = 0
    denied: int = 0
    # (source, granted) → number of current states
    by_source: dict[tuple[str, bool], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.granted + self.denied

    @property
    def granted_share(self) -> float:
        return self.granted / self.total if self.total else 0.0

    @property
    def denied_share(self) -> float:
        return self.denied / self.total if self.total else 0.0

    @property
    def granted_percent(self) -> str:
        return f"{100 * self.granted_share:.1f}"

    @property
    def denied_percent(self) -> str:
        return f"{100 * self.denied_share:.1f}"

    def add(self, *, source: str, granted: bool, count: int) -> None:
        if granted:
            self.granted += count
        else:
            self.denied += count
        key = (source, granted)
        self.by_source[key] = self.by_source.get(key, 0) + count

    def source_count(self, source: str) -> int:
        return self.by_source.get((source, True), 0) + self.by_source.get((source, False), 0)

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The sources present, in the order of `Source`, for the table."""
        out = []
        for source in Source:
            granted = self.by_source.get((source.value, True), 0)
            denied = self.by_source.get((source.value, False), 0)
            if granted or denied:
                out.append(
                    {
                        "key": source.value,
                        "label": source.label,
                        "granted": granted,
                        "denied": denied,
                        "total": granted + denied,
                        "percent": f"{100 * (granted + denied) / self.total:.1f}",
                    }
                )
        return out


@dataclass
class Statistics:
    rows: list[StatisticsRow]  # per jurisdiction and purpose
    totals: list[StatisticsRow]  # per purpose, all jurisdictions together


def consent_statistics(*, region: str = "", purpose_key: str = "") -> Statistics:
    """Shares granted/denied and the sources of the current consent states per
    jurisdiction and purpose, in ONE aggregate query (never row by row).

    Erased subjects are left out: their states are withdrawals that say nothing about
    the people who are still here.
    """
    states = ConsentState.objects.filter(subject__erased_at__isnull=True)
    if region:
        states = states.filter(subject__jurisdiction__region=region)
    if purpose_key:
        states = states.filter(purpose__key=purpose_key)
    groups = (
        states.values(
            "subject__jurisdiction__code",
            "purpose__key",
            "purpose__display_order",
            "source",
            "granted",
        )
        .annotate(count=Count("pk"))
        .order_by("subject__jurisdiction__code", "purpose__display_order", "purpose__key")
    )
    rows: dict[tuple[str, str], StatisticsRow] = {}
    totals: dict[str, StatisticsRow] = {}
    purpose_order: dict[str, tuple[int, str]] = {}
    for group in groups:
        code, key = group["subject__jurisdiction__code"], group["purpose__key"]
        purpose_order[key] = (group["purpose__display_order"], key)
        row = rows.setdefault((code, key), StatisticsRow(code, key))
        total = totals.setdefault(key, StatisticsRow(ALL_JURISDICTIONS, key))
        for target in (row, total):
            target.add(source=group["source"], granted=group["granted"], count=group["count"])
    return Statistics(
        rows=list(rows.values()),
        totals=sorted(totals.values(), key=lambda r: purpose_order[r.purpose]),
    )


# The chart is drawn on the server as SVG from the aggregate: no script needed.
CHART_LABEL_WIDTH = 190
CHART_BAR_WIDTH = 300
CHART_GAP = 20
CHART_ROW_HEIGHT = 26
CHART_BAR_HEIGHT = 16
CHART_TOP = 28


def chart(rows: Iterable[StatisticsRow]) -> dict[str, Any]:
    """Geometry of the two bars per row: granted/denied shares and sources."""
    share_x = CHART_LABEL_WIDTH
    percent_x = share_x + CHART_BAR_WIDTH + 6
    sources_x = percent_x + 60 + CHART_GAP
    drawn = []
    for index, row in enumerate(rows):
        y = CHART_TOP + index * CHART_ROW_HEIGHT
        label = f"{row.jurisdiction} · {row.purpose}"
        share_segments = []
        x = float(share_x)
        for css, count, what in (
            ("granted", row.granted, "granted"),
            ("denied", row.denied, "denied"),
        ):
            width = CHART_BAR_WIDTH * count / row.total if row.total else 0
            if width:
                share_segments.append(
                    {
                        "x": f"{x:.2f}",
                        "width": f"{width:.2f}",
                        "css": css,
                        "title": f"{label}: {count} of {row.total} {what} "
                        f"({100 * count / row.total:.1f}%)",
                    }
                )
            x += width
        source_segments = []
        x = float(sources_x)
        for source in row.sources:
            width = CHART_BAR_WIDTH * source["total"] / row.total
            source_segments.append(
                {
                    "x": f"{x:.2f}",
                    "width": f"{width:.2f}",
                    "css": f"source-{source['key']}",
                    "title": f"{label}: {source['label']} — {source['total']} of {row.total} "
                    f"({source['percent']}%; {source['granted']} granted, "
                    f"{source['denied']} denied)",
                }
            )
            x += width
        drawn.append(
            {
                "label": label,
                "total": row.jurisdiction == ALL_JURISDICTIONS,
                "y": y,
                "text_y": y + CHART_BAR_HEIGHT - 3,
                "percent": f"{row.granted_percent}%",
                "share_segments": share_segments,
                "source_segments": source_segments,
            }
        )
    return {
        "rows": drawn,
        "width": sources_x + CHART_BAR_WIDTH,
        "height": CHART_TOP + len(drawn) * CHART_ROW_HEIGHT,
        "label_x": 0,
        "share_x": share_x,
        "percent_x": percent_x,
        "sources_x": sources_x,
        "bar_height": CHART_BAR_HEIGHT,
        "bar_width": CHART_BAR_WIDTH,
        "header_y": CHART_TOP - 10,
    }


def _statistics_filters(request: HttpRequest) -> tuple[StatisticsFilterForm, str, str]:
    form = StatisticsFilterForm(request.GET or None)
    if form.is_bound and form.is_valid():
        purpose = form.cleaned_data["purpose"]
        return form, form.cleaned_data["region"], purpose.key if purpose else ""
    return form, "", ""


def statistics_view(request: HttpRequest, *, model_admin: ModelAdmin) -> TemplateResponse:
    _require(request, STATISTICS_PERMISSION)
    form, region, purpose_key = _statistics_filters(request)
    stats = consent_statistics(region=region, purpose_key=purpose_key)
    query = request.GET.urlencode() if form.is_bound and form.is_valid() else ""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Consent statistics",
        "opts": model_admin.model._meta,
        "filter_form": form,
        "stats": stats,
        "chart": chart([*stats.totals, *stats.rows]),
        "sources": [{"key": s.value, "label": s.label} for s in Source],
        "csv_url": reverse("admin:consent_consentstate_statistics_csv")
        + (f"?{query}" if query else ""),
    }
    return TemplateResponse(request, "admin/consent/statistics.html", context)


def statistics_csv_view(request: HttpRequest, *, model_admin: ModelAdmin) -> HttpResponse:
    _require(request, STATISTICS_PERMISSION)
    _, region, purpose_key = _statistics_filters(request)
    stats = consent_statistics(region=region, purpose_key=purpose_key)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="consent-statistics-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "jurisdiction",
            "purpose",
            "total",
            "granted",
            "denied",
            "granted_share",
            "denied_share",
            *(f"{s}_{g}" for s in Source.values for g in ("granted", "denied")),
        ]
    )
    for row in [*stats.totals, *stats.rows]:
        writer.writerow(
            [
                row.jurisdiction,
                row.purpose,
                row.total,
                row.granted,
                row.denied,
                f"{row.granted_share:.4f}",
                f"{row.denied_share:.4f}",
                *(row.by_source.get((s, g), 0) for s in Source.values for g in (True, False)),
            ]
        )
    return response


# --- support: staff consent change ------------------------------------------------------


def staff_change_view(
    request: HttpRequest, object_id: str, *, model_admin: ModelAdmin
) -> HttpResponse:
    """Records a consent change on the person's documented request; the reason is
    mandatory and is stored on the `staff` event with the staff member as actor."""
    _require(request, STAFF_CHANGE_PERMISSION)
    subject = get_object_or_404(
        Subject.objects.select_related("jurisdiction", "policy_version"),
        pk=object_id,
        erased_at__isnull=True,
    )
    form = StaffChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        purpose = form.cleaned_data["purpose"]
        granted = form.cleaned_data["decision"]
        try:
            services.record_choice(
                external_id=subject.external_id,
                purpose_key=purpose.key,
                granted=granted,
                source=Source.STAFF,
                actor=services.Actor(ActorType.STAFF, staff_actor_id(request)),
                reason=form.cleaned_data["reason"],
            )
        except ParleyError as error:
            target = {"purpose": "purpose", "granted": "decision", "reason": "reason"}
            form.add_error(target.get(error.field or ""), error.detail)
        else:
            decision = "granted" if granted else "refused"
            model_admin.log_change(
                request, subject, f"Staff consent change: {purpose.key} {decision}."
            )
            messages.success(
                request, f"Recorded: {purpose.key} {decision} for {subject.external_id}."
            )
            return HttpResponseRedirect(reverse("admin:consent_subject_change", args=[subject.pk]))
    states = ConsentState.objects.filter(subject=subject).select_related("purpose")
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Record a staff consent change for {subject.external_id}",
        "opts": model_admin.model._meta,
        "subject": subject,
        "states": sorted(states, key=lambda s: (s.purpose.display_order, s.purpose.key)),
        "form": form,
    }
    return TemplateResponse(request, "admin/consent/subject/staff_change.html", context)


# --- rollouts ----------------------------------------------------------------------------

# Which buttons the page offers; the engine has the last word (it refuses an invalid
# transition with Conflict, shown as an error message).
FINAL_ROLLOUT = {RolloutStatus.COMPLETED, RolloutStatus.CANCELLED, RolloutStatus.ROLLED_BACK}
STARTABLE_ROLLOUT = {RolloutStatus.DRAFT, RolloutStatus.SCHEDULED, RolloutStatus.RUNNING}
PAUSABLE_ROLLOUT = {RolloutStatus.SCHEDULED, RolloutStatus.RUNNING}

# action in the URL → (engine function, past tense for the message)
ROLLOUT_ACTIONS = {
    "start": ("start_now", "Started the next phase"),
    "pause": ("pause", "Paused the rollout"),
    "resume": ("resume", "Resumed the rollout"),
    "cancel": ("cancel", "Cancelled the rollout"),
    "dry-run": ("dry_run", "Computed a dry run"),
}


def _engine() -> ModuleType:
    # Imported here, not at module level: the admin must load even where the engine
    # is absent or broken, and the engine pulls in Celery tasks.
    from consent import rollouts

    return rollouts


def _back_to(rollout_pk: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:consent_rollout_change", args=[rollout_pk]))


@require_POST
def rollout_control_view(
    request: HttpRequest, object_id: str, action: str, *, model_admin: ModelAdmin
) -> HttpResponse:
    _require(request, CONTROL_PERMISSION)
    rollout = get_object_or_404(Rollout, pk=object_id)
    if action not in ROLLOUT_ACTIONS:
        raise PermissionDenied  # only the actions above exist
    function_name, done = ROLLOUT_ACTIONS[action]
    try:
        result = getattr(_engine(), function_name)(rollout=rollout, actor=staff_actor_id(request))
    except ParleyError as error:
        messages.error(request, error.detail)
    else:
        if isinstance(result, RolloutPhase):
            done = f"{done} (phase {result.position})"
        messages.success(request, f"{done}.")
    return _back_to(rollout.pk)


@require_POST
def rollback_phase_view(
    request: HttpRequest, object_id: str, phase_id: str, *, model_admin: ModelAdmin
) -> HttpResponse:
    _require(request, CONTROL_PERMISSION)
    phase = get_object_or_404(
        RolloutPhase.objects.select_related("rollout"), pk=phase_id, rollout_id=object_id
    )
    try:
        result = _engine().rollback_phase(phase=phase, actor=staff_actor_id(request))
    except ParleyError as error:
        messages.error(request, error.detail)
    else:
        counts = ""
        if isinstance(result, dict) and result:
            counts = " (" + ", ".join(f"{k}: {v}" for k, v in sorted(result.items())) + ")"
        messages.success(request, f"Rolled back phase {phase.position}{counts}.")
    return _back_to(phase.rollout_id)


@dataclass
class PhaseView:
    phase: RolloutPhase
    jurisdictions: list[str]
    can_rollback: bool

    @property
    def progress_max(self) -> int:
        return max(self.phase.total, 1)

    @property
    def progress_percent(self) -> str:
        total = self.phase.total
        return f"{100 * self.phase.processed / total:.1f}" if total else "0.0"


def _dry_run_tables(data: Any) -> dict[str, Any] | None:
    """The stored dry-run result as tables; None if its shape is not the expected one
    (the raw JSON is shown then)."""
    if not isinstance(data, dict):
        return None
    try:
        phases = [
            {
                "position": int(p["position"]),
                "subjects": int(p["subjects"]),
                "jurisdictions": [
                    {"code": str(j["code"]), "subjects": int(j["subjects"])}
                    for j in p.get("jurisdictions", [])
                ],
            }
            for p in data.get("phases", [])
        ]
        changes = [
            {
                "purpose": str(c["purpose"]),
                "granted": int(c["granted"]),
                "refused": int(c["refused"]),
                "kept": int(c["kept"]),
            }
            for c in data.get("changes", [])
        ]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return {"computed_at": data.get("computed_at"), "phases": phases, "changes": changes}


def rollout_context(request: HttpRequest, rollout: Rollout) -> dict[str, Any]:
    """What the rollout change page shows above and below the form."""
    can_control = request.user.has_perm(CONTROL_PERMISSION)
    phases = list(
        RolloutPhase.objects.filter(rollout=rollout)
        .prefetch_related("jurisdictions")
        .order_by("position")
    )
    final = rollout.status in FINAL_ROLLOUT
    actions = list(
        RolloutAction.objects.filter(rollout=rollout)
        .select_related("phase")
        .order_by("-at", "-id")[: ACTION_HISTORY_LIMIT + 1]
    )
    dry_run = rollout.dry_run
    return {
        "rollout_phases": [
            PhaseView(
                phase=phase,
                jurisdictions=sorted(j.code for j in phase.jurisdictions.all()),
                can_rollback=can_control
                and phase.started_at is not None
                and phase.status != RolloutStatus.ROLLED_BACK,
            )
            for phase in phases
        ],
        "can_control": can_control,
        "controls": {
            "start": rollout.status in STARTABLE_ROLLOUT
            and any(p.status == RolloutStatus.SCHEDULED for p in phases),
            "pause": rollout.status in PAUSABLE_ROLLOUT,
            "resume": rollout.status == RolloutStatus.PAUSED,
            "cancel": not final and rollout.status != RolloutStatus.FAILED,
            "dry_run": not final,
        },
        "rollout_actions": [
            {
                "action": action,
                "detail": json.dumps(action.detail, sort_keys=True) if action.detail else "",
            }
            for action in actions[:ACTION_HISTORY_LIMIT]
        ],
        "rollout_actions_truncated": len(actions) > ACTION_HISTORY_LIMIT,
        "dry_run": _dry_run_tables(dry_run),
        "dry_run_raw": json.dumps(dry_run, indent=2, sort_keys=True) if dry_run else "",
    }
