"""The Django admin for policy and support staff.

Consent events and states are read-only here: they change only through the
services, so every change leaves an event behind.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from consent import services
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


@admin.register(MetadataCategory)
class MetadataCategoryAdmin(admin.ModelAdmin):
    list_display = ["key", "name"]
    search_fields = ["key", "name"]


@admin.register(Purpose)
class PurposeAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "introduced_in", "essential", "gpc_applies", "profiling"]
    list_select_related = ["introduced_in"]
    filter_horizontal = ["categories"]
    search_fields = ["key", "name"]


@admin.register(PolicyVersion)
class PolicyVersionAdmin(admin.ModelAdmin):
    list_display = ["label", "title", "material", "published_at"]
    filter_horizontal = ["changed_purposes"]
    search_fields = ["label", "title"]


class JurisdictionRuleInline(admin.TabularInline):
    model = JurisdictionRule
    extra = 0
    fields = ["purpose", "mechanism", "notes"]


@admin.register(Jurisdiction)
class JurisdictionAdmin(admin.ModelAdmin):
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
    readonly_fields = ["current_policy_version"]


class ConsentStateInline(ReadOnlyMixin, admin.TabularInline):
    model = ConsentState
    fields = ("purpose", "granted", "source", "policy_version", "updated_at")
    readonly_fields = fields
    extra = 0


@admin.register(Subject)
class SubjectAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["external_id", "country", "subdivision", "jurisdiction", "policy_version"]
    list_select_related = ["jurisdiction", "policy_version"]
    list_filter = ["jurisdiction__region", "policy_version"]
    search_fields = ["=external_id"]
    show_full_result_count = False
    inlines = [ConsentStateInline]


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "subject",
        "purpose",
        "granted",
        "source",
        "policy_version",
        "occurred_at",
    ]
    list_select_related = ["subject", "purpose", "policy_version"]
    list_filter = ["source", "purpose", "granted"]
    search_fields = ["=subject__external_id"]
    show_full_result_count = False


@admin.register(ConsentState)
class ConsentStateAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["subject", "purpose", "granted", "source", "updated_at"]
    list_select_related = ["subject", "purpose"]
    list_filter = ["purpose", "granted", "source"]
    search_fields = ["=subject__external_id"]
    show_full_result_count = False


class RolloutPhaseInline(admin.TabularInline):
    model = RolloutPhase
    extra = 0
    fields = ["position", "starts_at", "status", "jurisdictions"]
    readonly_fields = ["status"]
    filter_horizontal = ["jurisdictions"]


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "status", "created_at"]
    list_select_related = ["version"]
    readonly_fields = ["status"]
    inlines = [RolloutPhaseInline]


class ServiceTokenInline(ReadOnlyMixin, admin.TabularInline):
    model = ServiceToken
    fields = ("prefix", "scopes", "created_at", "last_used_at", "revoked_at")
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
    here staff see them by prefix and revoke them."""

    list_display = ["account", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["account"]
    list_filter = ["account"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceToken]) -> None:
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.revoke_service_token(token=token)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consent.change_servicetoken")
