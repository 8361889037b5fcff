"""The Django admin for policy and support staff.

Consent events and states are read-only here: they change only through the
services, so every change leaves an event behind. Support records a consent change
with a reason through its own form (`admin_views.staff_change_view`), which goes
through `services.record_choice` like every other change.

Who sees what is decided by permissions, granted to the staff groups created by
migration 0005 (policy staff, support, billing ops): policy staff never get a
permission on subjects, events or states, only the aggregate statistics.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from consent import admin_views, services
from consent.choices import RolloutStatus
from consent.forms import (
    JurisdictionForm,
    JurisdictionRuleForm,
    PolicyVersionForm,
    PurposeForm,
    RolloutPhaseForm,
    RolloutPhaseFormSet,
)
from consent.models import (
    ConsentEvent,
    ConsentState,
    Jurisdiction,
    JurisdictionRule,
    MetadataCategory,
    PolicyVersion,
    Purpose,
    Rollout,
    RolloutPhase,
    ServiceAccount,
    ServiceToken,
    Subject,
)


class ReadOnlyMixin:
    """Visible to whoever may view the model; nobody adds, changes or deletes."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- reference data: policy staff -----------------------------------------------------------


@admin.register(MetadataCategory)
class MetadataCategoryAdmin(admin.ModelAdmin):
    list_display = ["key", "name"]
    search_fields = ["key", "name"]


class PurposeRuleInline(admin.TabularInline):
    """The purpose's mechanism in every jurisdiction, so that making a purpose
    essential and its rules `always_on` is one save. Rules are added on the
    jurisdiction page."""

    model = JurisdictionRule
    form = JurisdictionRuleForm
    extra = 0
    fields = ["jurisdiction", "mechanism", "notes"]
    readonly_fields = ["jurisdiction"]
    verbose_name_plural = "Mechanism per jurisdiction"

    def get_queryset(self, request: HttpRequest) -> QuerySet[JurisdictionRule]:
        # Each row is titled with str(rule), which names both.
        return super().get_queryset(request).select_related("jurisdiction", "purpose")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Purpose)
class PurposeAdmin(admin.ModelAdmin):
    form = PurposeForm
    list_display = ["key", "name", "introduced_in", "essential", "gpc_applies", "profiling"]
    list_select_related = ["introduced_in"]
    filter_horizontal = ["categories"]
    search_fields = ["key", "name"]
    inlines = [PurposeRuleInline]


@admin.register(PolicyVersion)
class PolicyVersionAdmin(admin.ModelAdmin):
    form = PolicyVersionForm
    list_display = ["label", "title", "material", "published_at"]
    filter_horizontal = ["changed_purposes"]
    search_fields = ["label", "title"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A published version is part of the record (the database refuses it too).
        if obj is not None and obj.published_at is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # One draft at a time, through its own page: the bulk action would not see
        # which of the selected versions are published.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class JurisdictionRuleInline(admin.TabularInline):
    model = JurisdictionRule
    form = JurisdictionRuleForm
    extra = 0
    fields = ["purpose", "mechanism", "notes"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[JurisdictionRule]:
        return super().get_queryset(request).select_related("jurisdiction", "purpose")


@admin.register(Jurisdiction)
class JurisdictionAdmin(admin.ModelAdmin):
    form = JurisdictionForm
    list_display = [
        "code",
        "name",
        "region",
        "consent_age",
        "profiling_ads_to_minors_banned",
        "gpc_required",
        "current_policy_version",
    ]
    list_filter = ["region", "kind", "gpc_required", "profiling_ads_to_minors_banned"]
    list_select_related = ["current_policy_version"]
    search_fields = ["code", "name", "law"]
    inlines = [JurisdictionRuleInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A new jurisdiction needs a starting version; afterwards only publishing or a
        # rollout moves it forward, never a hand edit.
        return [] if obj is None else ["current_policy_version"]


# --- subjects and consent records: support -------------------------------------------------


class ConsentStateInline(ReadOnlyMixin, admin.TabularInline):
    model = ConsentState
    fields = ("purpose", "granted", "source", "policy_version", "updated_at")
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsentState]:
        return super().get_queryset(request).select_related("purpose", "policy_version")


@admin.register(Subject)
class SubjectAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["external_id", "country", "subdivision", "jurisdiction", "policy_version"]
    list_select_related = ["jurisdiction", "policy_version"]
    list_filter = ["jurisdiction__region", "policy_version"]
    search_fields = ["=external_id"]
    show_full_result_count = False
    inlines = [ConsentStateInline]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/staff-change/",
                view(partial(admin_views.staff_change_view, model_admin=self)),
                name="consent_subject_staff_change",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        user = request.user
        context = {
            **(extra_context or {}),
            "can_record_staff_change": user.has_perm(admin_views.STAFF_CHANGE_PERMISSION),
            "can_view_history": user.has_perm("consent.view_consentevent"),
        }
        return super().change_view(request, object_id, form_url, context)


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "subject",
        "purpose",
        "granted",
        "source",
        "policy_version",
        "actor_id",
        "short_reason",
        "occurred_at",
    ]
    list_select_related = ["subject", "purpose", "policy_version"]
    list_filter = ["source", "purpose", "granted"]
    search_fields = ["=subject__external_id"]
    show_full_result_count = False
    ordering = ["-id"]

    @admin.display(description="reason")
    def short_reason(self, event: ConsentEvent) -> str:
        return event.reason if len(event.reason) <= 80 else event.reason[:79] + "…"


@admin.register(ConsentState)
class ConsentStateAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["subject", "purpose", "granted", "source", "updated_at"]
    list_select_related = ["subject", "purpose"]
    list_filter = ["purpose", "granted", "source"]
    search_fields = ["=subject__external_id"]
    show_full_result_count = False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "statistics/",
                view(partial(admin_views.statistics_view, model_admin=self)),
                name="consent_consentstate_statistics",
            ),
            path(
                "statistics.csv",
                view(partial(admin_views.statistics_csv_view, model_admin=self)),
                name="consent_consentstate_statistics_csv",
            ),
            *super().get_urls(),
        ]


# --- rollouts: policy staff ----------------------------------------------------------------


class RolloutPhaseInline(admin.TabularInline):
    model = RolloutPhase
    form = RolloutPhaseForm
    formset = RolloutPhaseFormSet
    extra = 0
    fields = ["position", "starts_at", "jurisdictions", "status", "progress"]
    readonly_fields = ["status", "progress"]
    filter_horizontal = ["jurisdictions"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolloutPhase]:
        return super().get_queryset(request).select_related("rollout")  # str(phase) names it

    @admin.display(description="processed / total (failed)")
    def progress(self, phase: RolloutPhase) -> str:
        if phase.pk is None:
            return "—"
        return f"{phase.processed} / {phase.total} ({phase.failed})"


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "status", "progress", "created_at"]
    list_select_related = ["version"]
    list_filter = ["status"]
    inlines = [RolloutPhaseInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rollout]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                subjects_total=Sum("phases__total"),
                subjects_processed=Sum("phases__processed"),
                phases_started=Count("phases", filter=Q(phases__started_at__isnull=False)),
            )
        )

    @admin.display(description="processed / total")
    def progress(self, rollout: Rollout) -> str:
        return f"{rollout.subjects_processed or 0} / {rollout.subjects_total or 0}"  # type: ignore[attr-defined]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["status", "created_at", "dry_run_at"]
        started = obj is not None and (
            obj.status not in (RolloutStatus.DRAFT, RolloutStatus.SCHEDULED)
            or obj.phases.filter(started_at__isnull=False).exists()
        )
        if started:
            fields.append("version")  # what subjects were carried to must not change
        return fields

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/control/<slug:action>/",
                view(partial(admin_views.rollout_control_view, model_admin=self)),
                name="consent_rollout_control",
            ),
            path(
                "<int:object_id>/phases/<int:phase_id>/rollback/",
                view(partial(admin_views.rollback_phase_view, model_admin=self)),
                name="consent_rollout_rollback_phase",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        rollout = self.get_object(request, object_id)
        if rollout is not None and self.has_view_or_change_permission(request, rollout):
            context.update(admin_views.rollout_context(request, rollout))
        return super().change_view(request, object_id, form_url, context)


# --- service accounts: superusers -------------------------------------------------------------


class ServiceTokenInline(ReadOnlyMixin, admin.TabularInline):
    model = ServiceToken
    fields = (
        "prefix",
        "scopes",
        "rate_limit_per_minute",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields
    extra = 0


@admin.register(ServiceAccount)
class ServiceAccountAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "created_at"]
    search_fields = ["name"]
    inlines = [ServiceTokenInline]


@admin.register(ServiceToken)
class ServiceTokenAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Tokens are issued with `manage.py create_service_token` (shown once);
    here staff see them by prefix, set their rate limit and revoke them."""

    list_display = [
        "account",
        "prefix",
        "scopes",
        "rate_limit",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_select_related = ["account"]
    list_filter = ["account"]
    actions = ["revoke"]
    fields = [
        "account",
        "prefix",
        "scopes",
        "rate_limit_per_minute",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    readonly_fields = ["account", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]

    @admin.display(description="rate limit / minute")
    def rate_limit(self, token: ServiceToken) -> str:
        if token.rate_limit_per_minute is None:
            return f"default ({settings.API_RATE_LIMIT_PER_MINUTE})"
        return str(token.rate_limit_per_minute)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only the rate limit can be changed (every other field is read-only); a
        # process's cached copy of the token picks it up within API_TOKEN_CACHE_SECONDS.
        return request.user.has_perm("consent.change_servicetoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceToken]) -> None:
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.revoke_service_token(token=token)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consent.change_servicetoken")


# The webhook screens live in their own module, written separately; load them when
# they exist.
from consent import admin_webhooks  # noqa: E402, F401  (registers the webhook admin)
