"""Webhook subscriptions of the calling service (`/api/v1/webhooks`).

Receiving consent changes is reading consent, so every operation needs
`consent:read`. A service sees and deletes only its own subscriptions; the secret
is shown once, in the answer to the POST that created it.
"""

from __future__ import annotations

from django.core.validators import URLValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import webhooks
from consent.api import principal_of, problems
from consent.choices import Scope, WebhookEvent
from consent.problems import StrictSerializer

READ = Scope.CONSENT_READ.value


class SubscriptionIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    url = serializers.CharField(
        max_length=500,
        validators=[URLValidator(schemes=list(webhooks.URL_SCHEMES))],
        help_text="An absolute http:// or https:// URL that accepts POST.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices),
        min_length=1,
        max_length=len(WebhookEvent.values),
    )
    secret = serializers.CharField(
        max_length=200,
        required=False,
        help_text="A Standard Webhooks secret (whsec_ and the base64 of 24 to 64 bytes); "
        "generated when omitted.",
    )


class SubscriptionOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEvent.choices))
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class SubscriptionCreatedOut(SubscriptionOut):
    secret = serializers.CharField(
        help_text="Verifies the webhook-signature header; shown only in this response."
    )


class WebhooksView(APIView):
    required_scopes = {"GET": READ, "POST": READ}

    @extend_schema(
        operation_id="webhooks_list",
        responses={200: SubscriptionOut(many=True), **problems()},
        summary="The calling service's webhook subscriptions (secrets are never shown)",
    )
    def get(self, request: Request) -> Response:
        account = principal_of(request).token.account
        subscriptions = webhooks.subscriptions_of(account=account)
        return Response(SubscriptionOut(subscriptions, many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        request=SubscriptionIn,
        responses={201: SubscriptionCreatedOut, **problems(400)},
        summary="Subscribe a URL to consent.changed and/or subject.erased "
        "(Standard Webhooks signatures; the secret is shown once)",
    )
    def post(self, request: Request) -> Response:
        data = SubscriptionIn(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = webhooks.subscribe(
            **data.validated_data, account=principal_of(request).token.account
        )
        return Response(SubscriptionCreatedOut(subscription).data, status=201)


class WebhookView(APIView):
    required_scopes = {"DELETE": READ}

    @extend_schema(
        operation_id="webhooks_delete",
        responses={204: None, **problems(404)},
        summary="Delete one of the calling service's subscriptions",
    )
    def delete(self, request: Request, subscription_id: int) -> Response:
        webhooks.unsubscribe(
            subscription_id=subscription_id, account=principal_of(request).token.account
        )
        return Response(status=204)
