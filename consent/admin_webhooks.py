"""Staff screens for webhooks: subscriptions, the outbox and delivery attempts.

Secrets are write-only here: the list shows a fingerprint, the form never renders
the stored value. The outbox and deliveries are read-only; staff can only make
pending or dead deliveries due again ("retry now").
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from consent import webhooks
from consent.admin import ReadOnlyMixin
from consent.choices import DeliveryStatus, WebhookEvent
from consent.errors import InvalidValue
from consent.models import OutboxMessage, WebhookDelivery, WebhookSubscription

# consent.admin imports this module last, after ReadOnlyMixin is defined.
_ReadOnly = ReadOnlyMixin


def _checked(validate: Any, value: Any) -> Any:
    try:
        return validate(value)
    except InvalidValue as exc:
        raise ValidationError(exc.detail) from None


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.CharField(max_length=500, help_text="An absolute http:// or https:// URL.")
    events = forms.MultipleChoiceField(
        choices=WebhookEvent.choices, widget=forms.CheckboxSelectMultiple
    )
    secret = forms.CharField(
        required=False,
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="A Standard Webhooks secret (whsec_…). Leave empty to generate one when "
        "adding, or to keep the current one when changing.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "events", "secret", "is_active", "account"]

    def clean_url(self) -> str:
        return str(_checked(webhooks.validate_url, self.cleaned_data["url"]))

    def clean_events(self) -> list[str]:
        return list(_checked(webhooks.validate_events, self.cleaned_data["events"]))

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            # Keeps the stored secret on change; `save_model` generates one on add.
            return self.instance.secret if self.instance.pk else ""
        return str(_checked(webhooks.validate_secret, secret))


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["name", "url", "events", "is_active", "account", "secret_masked", "created_at"]
    list_select_related = ["account"]
    list_filter = ["is_active", "account"]
    search_fields = ["name", "url"]

    @admin.display(description="secret")
    def secret_masked(self, subscription: WebhookSubscription) -> str:
        return f"whsec_•••• (sha256 {webhooks.secret_fingerprint(subscription.secret)}…)"

    def save_model(
        self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool
    ) -> None:
        generated = not obj.secret
        if generated:
            obj.secret = webhooks.new_secret()
        super().save_model(request, obj, form, change)
        if generated:
            # Shown once, like a service token: the receiving service needs it to verify.
            self.message_user(
                request,
                f"Generated secret (copy it to the receiving service now; it is not shown "
                f"again): {obj.secret}",
                messages.WARNING,
            )


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["id", "event_type", "subject_id", "created_at", "fanned_out"]
    list_filter = ["event_type", "fanned_out"]
    search_fields = ["=subject_id"]
    readonly_fields = ["event_type", "subject_id", "payload", "created_at", "fanned_out"]
    show_full_result_count = False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = [
        "id",
        "subscription",
        "message_id",
        "subject_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error_short",
        "delivered_at",
    ]
    list_select_related = ["subscription"]
    list_filter = ["status", "subscription"]
    search_fields = ["=subject_id", "=message__id"]
    readonly_fields = [
        "subscription",
        "message",
        "subject_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "delivered_at",
    ]
    show_full_result_count = False
    actions = ["retry_now"]

    @admin.display(description="last error")
    def last_error_short(self, delivery: WebhookDelivery) -> str:
        error = delivery.last_error
        return error if len(error) <= 80 else error[:79] + "…"

    @admin.action(
        description="Retry the selected pending or dead deliveries now", permissions=["retry"]
    )
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        ids = list(
            queryset.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.DEAD]).values_list(
                "pk", flat=True
            )
        )
        count = webhooks.retry_deliveries(delivery_ids=ids)
        self.message_user(
            request,
            f"{count} deliveries will be retried now; delivered ones were left alone.",
            messages.SUCCESS,
        )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consent.change_webhookdelivery")
