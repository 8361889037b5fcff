"""The ad server's endpoints: decisions and the impressions and clicks reported for them.

Views validate input (every 4xx) and shape output; `ads.decisions` decides and charges.
"""

from __future__ import annotations

import functools
from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ads import decisions, fastlane
from ads.choices import AdEventType, DecisionReason, Placement
from ads.models import Ad, AdEvent
from consent import validators
from consent.api import problems
from consent.choices import Scope
from consent.errors import InvalidValue
from consent.fastlane import answer_once
from consent.problems import StrictSerializer

DECIDE = Scope.ADS_DECIDE.value


class PlacementField(serializers.ChoiceField):
    """`status` or `channels`; a chat is named as such in the refusal."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "chat" in data.casefold():
            raise serializers.ValidationError(
                "Ads are never shown inside chats: use 'status' or 'channels'.",
                code="no_ads_in_chats",
            )
        return super().to_internal_value(data)


class AdDecisionContextIn(StrictSerializer):
    country = serializers.CharField(
        max_length=2, help_text="Where the request comes from (ISO 3166-1 alpha-2)."
    )
    language = serializers.CharField(max_length=35, help_text="The app's language (BCP 47).")

    def validate_country(self, value: str) -> str:
        try:
            return validators.country(value)
        except InvalidValue as error:
            raise serializers.ValidationError(error.detail) from None

    def validate_language(self, value: str) -> str:
        try:
            return validators.language(value)
        except InvalidValue as error:
            raise serializers.ValidationError(error.detail) from None


class AdDecisionIn(StrictSerializer):
    subject = serializers.CharField(max_length=64, help_text="The subject's external id.")
    placement = PlacementField(choices=Placement.choices)
    context = AdDecisionContextIn(  # type: ignore[assignment]  # a field, not Field.context
        help_text="The request's coarse context; the only data used without ads_personalization."
    )

    def validate_subject(self, value: str) -> str:
        try:
            return validators.external_id(value)
        except InvalidValue as error:
            raise serializers.ValidationError(error.detail) from None


class ServedAdOut(serializers.Serializer):
    id = serializers.IntegerField()
    headline = serializers.CharField()
    body = serializers.CharField()
    image_url = serializers.CharField(help_text="Empty when the ad has no image.")
    call_to_action = serializers.CharField()
    advertiser = serializers.CharField(source="campaign.advertiser.name")
    click_to_chat = serializers.SerializerMethodField()

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text="The business account a click opens a chat with (click-to-chat ads).",
        )
    )
    def get_click_to_chat(self, ad: Ad) -> str | None:
        return ad.campaign.click_to_chat or None


class AdDecisionOut(serializers.Serializer):
    decision_id = serializers.UUIDField(source="id")
    ad = ServedAdOut(allow_null=True)
    personalized = serializers.BooleanField(
        help_text="False when only the request's context was used."
    )
    reason = serializers.ChoiceField(choices=DecisionReason.choices)


class AdEventIn(StrictSerializer):
    decision_id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=AdEventType.choices)
    occurred_at = serializers.DateTimeField(
        required=False, help_text="When it happened on the device; defaults to now."
    )


class AdEventOut(serializers.Serializer):
    decision_id = serializers.UUIDField()
    type = serializers.CharField(help_text="impression or click")
    cost = serializers.DecimalField(
        max_digits=14, decimal_places=4, help_text="What this event charged the campaign."
    )


class DecisionsView(APIView):
    required_scopes = {"POST": DECIDE}

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        """The DRF view behind the fast lane (`ads/fastlane.py`): a plainly valid
        request is answered there; everything else, errors included, here."""
        drf_view = super().as_view(**initkwargs)

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            fast = answer_once(fastlane.decide, request)
            return fast if fast is not None else drf_view(request, *args, **kwargs)

        # The schema generator and Django's CSRF exemption read these attributes.
        functools.update_wrapper(view, drf_view)
        return view

    @extend_schema(
        operation_id="ad_decisions_create",
        request=AdDecisionIn,
        responses={200: AdDecisionOut, **problems(400)},
        summary="Choose an ad for a subject in Status or Channels (never in chats)",
        description=(
            "Features whose purpose the subject has not allowed are removed before "
            "targeting; without ads_personalization only the request's context is used. "
            "`reason` is `served`, `no_eligible_ad`, `not_live` (ads have not reached the "
            "subject yet) or `unknown_subject`. Every decision is logged."
        ),
    )
    def post(self, request: Request) -> Response:
        data = AdDecisionIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        decision = decisions.decide(
            external_id=values["subject"],
            placement=values["placement"],
            context=values["context"],
        )
        return Response(AdDecisionOut(decision).data)


class AdEventsView(APIView):
    required_scopes = {"POST": DECIDE}

    @extend_schema(
        operation_id="ad_events_create",
        request=AdEventIn,
        responses={
            201: AdEventOut,
            200: OpenApiResponse(AdEventOut, "A replay: the event was already recorded."),
            **problems(400, 404, 409),
        },
        summary="Report an impression or a click of a decision's ad (idempotent)",
        description=(
            "One impression and one click per decision; a replay answers 200 with the "
            "first event and charges nothing. CPM campaigns pay bid/1000 per impression, "
            "CPC campaigns their bid per click. 409 when the decision served no ad."
        ),
    )
    def post(self, request: Request) -> Response:
        data = AdEventIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        event, created = decisions.record_event(
            decision_id=values["decision_id"],
            type=values["type"],
            occurred_at=values.get("occurred_at"),
        )
        return Response(event_out(event), status=201 if created else 200)


def event_out(event: AdEvent) -> dict[str, Any]:
    return AdEventOut(
        {"decision_id": event.decision_id, "type": event.type, "cost": event.cost}
    ).data
